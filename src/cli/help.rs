//! What every command of the `oncelog` binary accepts, in one table: the argument parsers take
//! their flags from it and `help` prints it, so a flag cannot be accepted without being listed
//! (a unit test checks the table against itself).

/// One `--flag` of a command.
#[derive(Debug)]
pub struct Flag {
    pub name: &'static str,
    /// The value's placeholder (`N`, `FILE`), `None` for a switch.
    pub value: Option<&'static str>,
    pub help: &'static str,
}

/// One command.
#[derive(Debug)]
pub struct Command {
    pub name: &'static str,
    /// The positional arguments (`DIR`, `[DIR]`), empty if none.
    pub args: &'static str,
    pub about: &'static str,
    pub flags: &'static [Flag],
}

const fn flag(name: &'static str, value: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: Some(value),
        help,
    }
}

const fn switch(name: &'static str, help: &'static str) -> Flag {
    Flag {
        name,
        value: None,
        help,
    }
}

const CLUSTER: Flag = flag("--cluster", "FILE", "the cluster file (required)");
const CERT: Flag = flag(
    "--cert",
    "FILE",
    "the certificate chain (PEM) to present when the cluster file has tls_ca (default for a \
     member: its tls_cert line)",
);
const SEGMENT_BYTES: Flag = flag(
    "--segment-bytes",
    "N",
    "segment size of every log, preallocated with the next one (default 67108864)",
);
const KEY: Flag = flag("--key", "FILE", "the private key (PEM) of --cert");
const METRICS: Flag = flag(
    "--metrics",
    "ADDR",
    "serve the metrics in the Prometheus text format over HTTP at IP:PORT, or at \
     127.0.0.1:PORT for a bare PORT (default: off)",
);
const INSECURE: Flag = switch(
    "--insecure",
    "serve plain TCP, without TLS or authorization, when the cluster file has no tls_ca \
     (loopback development only: docs/security.md)",
);
const TIMEOUT: Flag = flag(
    "--timeout-ms",
    "N",
    "how long to wait for the controller's answer (default 5000)",
);

/// The server limits of `node` and `controller` (`docs/replication.md`, "Connection limits").
macro_rules! limit_flags {
    ($($extra:expr),* $(,)?) => {
        &[
            $($extra,)*
            flag(
                "--max-connections",
                "N",
                "connections served at once; more are closed on accept (default 256)",
            ),
            flag(
                "--idle-timeout-ms",
                "N",
                "close a connection that starts no request for N ms (default 60000)",
            ),
            flag(
                "--frame-timeout-ms",
                "N",
                "a request must arrive whole within N ms of its first byte (default 10000)",
            ),
            flag(
                "--max-request-bytes",
                "N",
                "largest request frame read (default 1052672; a node raises it to fit its \
                 largest batch)",
            ),
        ]
    };
}

pub const COMMANDS: &[Command] = &[
    Command {
        name: "demo",
        args: "[DIR]",
        about: "write a log, crash a writer with SIGKILL, recover and verify it (DIR defaults \
                to ./oncelog-demo and is deleted first)",
        flags: &[],
    },
    Command {
        name: "demo-cluster",
        args: "[DIR]",
        about: "three in-process replicas survive a leader kill: acks=all writes, failover, \
                retries, every record read exactly once (DIR defaults to \
                ./oncelog-demo-cluster, deleted first)",
        flags: &[],
    },
    Command {
        name: "dump",
        args: "DIR",
        about: "print every batch of every segment (like kafka-dump-log), markers and \
                transactional batches, each .txnindex, the open transactions and the LSO",
        flags: &[switch("--records", "also print each record")],
    },
    Command {
        name: "verify",
        args: "DIR",
        about: "full integrity check; exit 0 if OK, 1 on any problem",
        flags: &[],
    },
    Command {
        name: "stat",
        args: "DIR",
        about: "segments, offsets, recovery point and clean-shutdown state",
        flags: &[],
    },
    Command {
        name: "controller",
        args: "",
        about: "run the partition's controller (leader, epochs, ISR, replica sessions, \
                producer ids) until SIGTERM or SIGINT; in memory by default, in etcd with \
                --etcd (then several controllers can run and one acts at a time)",
        flags: limit_flags![
            CLUSTER,
            INSECURE,
            CERT,
            KEY,
            flag(
                "--dir",
                "DIR",
                "state directory, in memory mode (default: controller-data beside the cluster \
                 file; with etcd the state is in etcd and --dir is refused)",
            ),
            flag(
                "--session-timeout-ms",
                "N",
                "fail a replica silent for N ms (default 3000; on etcd, its session lease, \
                 rounded up to whole seconds)",
            ),
            flag(
                "--etcd",
                "URLS",
                "keep the state in etcd at these comma-separated client URLs \
                 (http://127.0.0.1:2379,...; default: the cluster file's etcd line; without \
                 either, the state is in this process's memory)",
            ),
            flag(
                "--etcd-prefix",
                "PREFIX",
                "the partition's key prefix in etcd (default /oncelog)",
            ),
            flag(
                "--listen",
                "ADDR",
                "serve on this IP:PORT (default: the cluster file's first controller address; \
                 with etcd, several controllers may run, one per address)",
            ),
            flag(
                "--election-ttl-ms",
                "N",
                "with etcd: the acting controller's lease; another takes over within about \
                 this long after it dies (default 2000, whole seconds)",
            ),
            METRICS,
        ],
    },
    Command {
        name: "node",
        args: "",
        about: "run one replica of the cluster until SIGTERM or SIGINT, which close its log \
                cleanly",
        flags: limit_flags![
            CLUSTER,
            flag("--id", "N", "the replica id (required)"),
            INSECURE,
            CERT,
            KEY,
            flag(
                "--dir",
                "DIR",
                "the log directory (default: the one the cluster file names)",
            ),
            SEGMENT_BYTES,
            flag(
                "--tick-ms",
                "N",
                "heartbeat and replica tick period (default 50)",
            ),
            flag(
                "--lag-ms",
                "N",
                "drop an ISR follower not caught up within N ms (default 2000)",
            ),
            METRICS,
        ],
    },
    Command {
        name: "move-leader",
        args: "",
        about: "move leadership to a replica (it must be in the ISR and caught up)",
        flags: &[
            CLUSTER,
            flag("--to", "N", "the new leader (required)"),
            switch(
                "--unclean",
                "allow an out-of-sync replica when no in-sync one can lead",
            ),
            TIMEOUT,
            CERT,
            KEY,
        ],
    },
    Command {
        name: "serve",
        args: "",
        about: "serve the Kafka wire protocol over a broker directory (a log per \
                topic-partition) until SIGTERM or SIGINT, which close it cleanly \
                (docs/kafka-wire.md)",
        flags: &[
            flag(
                "--data",
                "DIR",
                "the broker's data directory (default: ./oncelog-data)",
            ),
            flag(
                "--listen",
                "ADDR",
                "where to listen (default 127.0.0.1:9092; port 0 picks a free one)",
            ),
            flag(
                "--advertise",
                "HOST:PORT",
                "the address Metadata gives clients (default: the listening one)",
            ),
            flag(
                "--partitions",
                "N",
                "partitions of a topic created on first use (default 4)",
            ),
            METRICS,
            SEGMENT_BYTES,
            flag(
                "--max-request-bytes",
                "N",
                "largest request frame; a larger one closes the connection (default 104857600)",
            ),
            flag(
                "--tls-cert",
                "FILE",
                "serve TLS only, presenting this certificate chain (PEM; needs --tls-key)",
            ),
            flag("--tls-key", "FILE", "the private key (PEM) of --tls-cert"),
            flag(
                "--tls-client-ca",
                "FILE",
                "mutual TLS: every client must present a certificate signed by a CA in FILE \
                 (its DNS name, else its CN, is the principal)",
            ),
            flag(
                "--sasl-users",
                "FILE",
                "SASL/PLAIN: users file, lines USER:sha256:HEX or USER:plain:PASSWORD \
                 (docs/kafka-wire.md)",
            ),
            switch(
                "--sasl-allow-plaintext",
                "allow SASL/PLAIN without TLS (passwords in the clear: loopback tests only)",
            ),
            flag(
                "--acl",
                "FILE",
                "lines 'allow PRINCIPAL OP[,OP]' (produce, read, admin, group, txn); default: \
                 every authenticated client may do everything",
            ),
            flag(
                "--max-connections",
                "N",
                "connections served at once; more are closed on accept (default 1024)",
            ),
            flag(
                "--frame-deadline-ms",
                "N",
                "a request frame (and a TLS handshake, and a response) must be whole within N \
                 ms of its first byte (default 30000)",
            ),
            flag(
                "--idle-timeout-ms",
                "N",
                "close a connection that starts no request for N ms (default 600000)",
            ),
            flag(
                "--test-drop-after-append",
                "N",
                "TEST FAULT: close the connection unanswered after every N-th Produce that \
                 appended",
            ),
            switch(
                "--test-ack-without-storing",
                "TEST MODE: answer every Produce without storing it (the protocol-cost bench; \
                 never on real data)",
            ),
        ],
    },
    Command {
        name: "cluster-status",
        args: "",
        about: "leader, leader and partition epochs, ISR and each replica's session (from \
                etcd when the cluster runs on it, else from a controller)",
        flags: &[
            CLUSTER,
            TIMEOUT,
            CERT,
            KEY,
            flag(
                "--etcd",
                "URLS",
                "read the state from etcd at these comma-separated client URLs (default: \
                 the cluster file's etcd line; without either, ask a controller)",
            ),
            flag(
                "--etcd-prefix",
                "PREFIX",
                "the partition's key prefix in etcd (default /oncelog)",
            ),
        ],
    },
    Command {
        name: "produce",
        args: "",
        about: "a console producer: each line of stdin becomes a record, sent in batches by \
                the idempotent producer to the cluster's leader (exactly once across \
                retries and leader changes); the summary goes to stderr, a failed batch \
                exits 1",
        flags: &[
            CLUSTER,
            flag(
                "--acks",
                "0|1|all",
                "when the leader answers: 1 after its own append (a node answers 0 the same \
                 way), all when the whole ISR holds the batch, so it survives the leader \
                 (default all)",
            ),
            flag(
                "--key-separator",
                "SEP",
                "split each line at the first SEP into key and value (a line without SEP \
                 fails the command); default: no key",
            ),
            flag(
                "--timeout-ms",
                "N",
                "how long one batch may wait for its acknowledgement, retries included \
                 (default 10000)",
            ),
            CERT,
            KEY,
        ],
    },
    Command {
        name: "consume",
        args: "",
        about: "a console consumer: prints each committed record's value on its own line \
                (null for none), read from the leader up to the high-water mark, then exits \
                (or, with --follow, waits for more until SIGINT or SIGTERM)",
        flags: &[
            CLUSTER,
            switch(
                "--from-beginning",
                "start at the log start offset (the default)",
            ),
            flag("--offset", "N", "start at offset N"),
            flag("--max-records", "N", "stop after printing N records"),
            switch(
                "--follow",
                "at the end, keep polling for new records until SIGINT or SIGTERM",
            ),
            switch(
                "--print-offset",
                "print each record's offset and a tab before it",
            ),
            switch(
                "--print-key",
                "print each record's key (null for none) and a tab before its value",
            ),
            flag(
                "--timeout-ms",
                "N",
                "how long one read may keep retrying (no leader, leader unreachable) before \
                 the command fails (default 10000)",
            ),
            CERT,
            KEY,
        ],
    },
];

/// The command called `name`.
pub fn find(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

impl Command {
    /// `oncelog node --cluster FILE --id N [--dir DIR] ...`, wrapped between arguments.
    pub fn synopsis(&self) -> String {
        let mut pieces = vec![format!("oncelog {}", self.name)];
        for f in self.flags {
            let text = match f.value {
                Some(v) => format!("{} {v}", f.name),
                None => f.name.to_string(),
            };
            if f.help.contains("(required)") {
                pieces.push(text);
            } else {
                pieces.push(format!("[{text}]"));
            }
        }
        if !self.args.is_empty() {
            pieces.push(self.args.to_string());
        }
        let mut out = String::new();
        let mut line_len = 0;
        for p in pieces {
            if line_len > 0 && line_len + 1 + p.len() > 96 {
                out.push_str("\n       ");
                line_len = 7;
            }
            if line_len > 0 {
                out.push(' ');
                line_len += 1;
            }
            line_len += p.len();
            out.push_str(&p);
        }
        out
    }

    /// What `oncelog <command> --help` prints.
    pub fn help(&self) -> String {
        let mut s = format!("{}\n\n{}\n", self.synopsis(), wrap(self.about, 0));
        if !self.flags.is_empty() {
            s.push_str("\nOPTIONS:\n");
            for f in self.flags {
                let name = match f.value {
                    Some(v) => format!("{} {v}", f.name),
                    None => f.name.to_string(),
                };
                s.push_str(&format!(
                    "    {name:<24} {}\n",
                    wrap(f.help, 29).trim_start()
                ));
            }
        }
        s.push_str("\n    -h, --help               print this help\n");
        s
    }

    /// The flags that take a value, and the switches (the parser of the cluster commands).
    #[cfg(feature = "net")]
    pub fn flag_names(&self) -> (Vec<&'static str>, Vec<&'static str>) {
        let values = self.flags.iter().filter(|f| f.value.is_some());
        let switches = self.flags.iter().filter(|f| f.value.is_none());
        (
            values.map(|f| f.name).collect(),
            switches.map(|f| f.name).collect(),
        )
    }
}

/// What `oncelog help` prints.
pub fn usage() -> String {
    let mut s = String::from(
        "oncelog - an embeddable partition log for exactly-once streams\n\nUSAGE:\n    \
         oncelog <COMMAND> [ARGS]\n    oncelog <COMMAND> --help     that command's options\n    \
         oncelog help [COMMAND]\n    oncelog --version\n\nCOMMANDS:\n",
    );
    for c in COMMANDS {
        let head = if c.args.is_empty() {
            c.name.to_string()
        } else {
            format!("{} {}", c.name, c.args)
        };
        s.push_str(&format!(
            "    {head:<20} {}\n",
            wrap(c.about, 25).trim_start()
        ));
    }
    s.push_str(
        "    help [COMMAND]       print this help, or COMMAND's\n\ndump, verify and stat \
         never open the log for writing: they work on a locked or damaged\ndirectory and \
         change nothing.\n",
    );
    s
}

/// `text` wrapped at 96 columns, continuation lines indented by `indent`.
fn wrap(text: &str, indent: usize) -> String {
    let width = 96usize.saturating_sub(indent).max(40);
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + 1 + word.len() > width {
            out.push_str(&" ".repeat(indent));
            out.push_str(&line);
            out.push('\n');
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&" ".repeat(indent));
    out.push_str(&line);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_is_in_its_commands_help_and_names_are_unique() {
        for c in COMMANDS {
            let help = c.help();
            let mut seen = Vec::new();
            for f in c.flags {
                assert!(f.name.starts_with("--"), "{}: {}", c.name, f.name);
                assert!(
                    help.contains(f.name),
                    "{}: {} missing from\n{help}",
                    c.name,
                    f.name
                );
                assert!(!seen.contains(&f.name), "{}: {} twice", c.name, f.name);
                seen.push(f.name);
            }
            assert!(
                usage().contains(c.name),
                "{} missing from the usage",
                c.name
            );
        }
        assert!(find("node").unwrap().help().contains("--tick-ms"));
        assert!(find("frobnicate").is_none());
    }

    /// The defaults the help states are the library's.
    #[cfg(feature = "net")]
    #[test]
    fn the_node_help_states_the_transport_defaults() {
        let node = find("node").unwrap().help();
        let node = node.split_whitespace().collect::<Vec<_>>().join(" ");
        let t = oncelog::net::TransportConfig::default();
        for default in [
            t.max_connections.to_string(),
            t.idle_timeout.unwrap().as_millis().to_string(),
            t.frame_timeout.as_millis().to_string(),
            t.max_request_bytes.to_string(),
        ] {
            assert!(
                node.contains(&format!("default {default}")),
                "{default}: {node}"
            );
        }
    }
}
