//! The APIs and versions `oncelog serve` implements, which is exactly what ApiVersions
//! advertises (docs/kafka-wire.md has the table and why each ceiling is where it is).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse};
use kafka_protocol::ResponseError;

/// (API, lowest, highest version) served. Ceilings stop below shapes not implemented: Fetch
/// v13+ and Produce v11+ name topics by id or carry leader-change hints, Metadata v13 adds
/// a top-level error; InitProducerId must include v0 or librdkafka disables idempotence;
/// FindCoordinator v4+ and OffsetFetch v8+ batch several keys or groups per request.
pub const ADVERTISED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 10),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 4),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 2),
];

/// Served (and advertised) only when SASL is on (`--sasl-users`): SaslHandshake v0 (the token
/// follows as a bare frame) and v1 (it follows in SaslAuthenticate), SaslAuthenticate v0-2.
pub const ADVERTISED_SASL: &[(ApiKey, i16, i16)] = &[
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Every API served, with the SASL ones when `sasl`.
fn served(sasl: bool) -> impl Iterator<Item = &'static (ApiKey, i16, i16)> {
    let extra: &[(ApiKey, i16, i16)] = if sasl { ADVERTISED_SASL } else { &[] };
    ADVERTISED.iter().chain(extra)
}

/// The versions of `key` served (advertised) with SASL on or off, if any.
pub fn advertised_with(key: ApiKey, sasl: bool) -> Option<std::ops::RangeInclusive<i16>> {
    served(sasl)
        .find(|&&(k, ..)| k == key)
        .map(|&(_, lo, hi)| lo..=hi)
}

/// The versions of `key` served without SASL, if any.
pub fn advertised(key: ApiKey) -> Option<std::ops::RangeInclusive<i16>> {
    advertised_with(key, false)
}

/// Whether `key` at `version` is served with SASL on or off.
pub fn is_supported_with(key: ApiKey, version: i16, sasl: bool) -> bool {
    advertised_with(key, sasl).is_some_and(|r| r.contains(&version))
}

/// Whether `key` at `version` is served without SASL.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    is_supported_with(key, version, false)
}

/// The ApiVersions answer without SASL ([`api_versions_with`]).
pub fn api_versions(supported: bool) -> ApiVersionsResponse {
    api_versions_with(supported, false)
}

/// The ApiVersions answer, listing the SASL APIs when `sasl`; `UNSUPPORTED_VERSION` with the
/// same list when the client asked with a version we do not serve (it then retries with one
/// from the list, KIP-511).
pub fn api_versions_with(supported: bool, sasl: bool) -> ApiVersionsResponse {
    let mut r = ApiVersionsResponse::default();
    if !supported {
        r.error_code = ResponseError::UnsupportedVersion.code();
    }
    r.api_keys = served(sasl)
        .map(|&(k, lo, hi)| {
            let mut v = ApiVersion::default();
            v.api_key = k as i16;
            v.min_version = lo;
            v.max_version = hi;
            v
        })
        .collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_advertised_range_is_one_the_codec_handles() {
        for &(k, lo, hi) in served(true) {
            let codec = k.valid_versions();
            assert!(
                codec.min <= lo && hi <= codec.max,
                "{k:?} {lo}-{hi} vs {codec}"
            );
        }
        assert!(is_supported(ApiKey::InitProducerId, 0));
        assert!(!is_supported(ApiKey::Fetch, 13));
        // v4+ of these is the batched broker-to-broker form / transaction version 2.
        assert!(is_supported(ApiKey::AddPartitionsToTxn, 3));
        assert!(!is_supported(ApiKey::AddPartitionsToTxn, 4));
        assert!(!is_supported(ApiKey::EndTxn, 4));
        assert!(!is_supported(ApiKey::WriteTxnMarkers, 1));
        // SASL only when it is on.
        assert!(!is_supported(ApiKey::SaslHandshake, 1));
        assert!(is_supported_with(ApiKey::SaslHandshake, 1, true));
        assert!(is_supported_with(ApiKey::SaslAuthenticate, 2, true));
        assert!(!is_supported_with(ApiKey::SaslAuthenticate, 3, true));
        assert_eq!(api_versions(true).api_keys.len(), ADVERTISED.len());
        assert_eq!(
            api_versions_with(true, true).api_keys.len(),
            ADVERTISED.len() + 2
        );
    }
}
