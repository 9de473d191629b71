//! MySQL client/server protocol as a pass-through proxy observes it: pure code, no I/O.
//!
//! The proxy relays bytes untouched (except the capability flags of the server's greeting,
//! see [`handshake::hide_capabilities`]) and feeds the same bytes to an [`Observer`], which
//! follows packet framing ([`packet`]), the connection phase ([`handshake`]) and the
//! command/reply state machine ([`command`]) to report who runs which commands and how each
//! ends. The observer keeps only a small prefix of each logical packet, never a whole payload,
//! and when it meets something it cannot follow it says so once and goes passive: relaying is
//! never at its mercy. The rules followed are those of the MySQL protocol as MariaDB 10.11 and
//! the common clients speak it, summarised with an ASCII diagram in docs/mysql.md.

pub mod auth;
pub mod command;
pub mod digest;
pub mod handshake;
pub mod observer;
pub mod packet;
pub mod session_track;

pub use command::{command_name, CommandClass};
pub use observer::{Event, Observer, ReplyDetail};
pub use packet::{err_packet, Frame, Framer, MAX_CHUNK};

/// Capability flags (bits 0–31 from the handshake, 32–63 MariaDB's extended ones).
pub mod caps {
    /// `CLIENT_LONG_PASSWORD`; on MariaDB servers `CLIENT_MYSQL`: clear means "MariaDB
    /// extended capabilities follow".
    pub const CLIENT_MYSQL: u64 = 1;
    pub const CONNECT_WITH_DB: u64 = 1 << 3;
    pub const COMPRESS: u64 = 1 << 5;
    pub const LOCAL_FILES: u64 = 1 << 7;
    pub const PROTOCOL_41: u64 = 1 << 9;
    pub const SSL: u64 = 1 << 11;
    pub const SECURE_CONNECTION: u64 = 1 << 15;
    pub const MULTI_STATEMENTS: u64 = 1 << 16;
    pub const MULTI_RESULTS: u64 = 1 << 17;
    pub const PLUGIN_AUTH: u64 = 1 << 19;
    pub const CONNECT_ATTRS: u64 = 1 << 20;
    pub const PLUGIN_AUTH_LENENC_CLIENT_DATA: u64 = 1 << 21;
    pub const SESSION_TRACK: u64 = 1 << 23;
    pub const DEPRECATE_EOF: u64 = 1 << 24;
    pub const OPTIONAL_RESULTSET_METADATA: u64 = 1 << 25;
    pub const ZSTD_COMPRESSION: u64 = 1 << 26;
    pub const QUERY_ATTRIBUTES: u64 = 1 << 27;
    pub const MARIADB_PROGRESS: u64 = 1 << 32;
    pub const MARIADB_COM_MULTI: u64 = 1 << 33;
    pub const MARIADB_CACHE_METADATA: u64 = 1 << 36;

    /// What shardgate hides from clients in the greeting, and why:
    /// - `SSL`: TLS would make the stream opaque (TLS towards clients is a later step);
    /// - `COMPRESS`, `ZSTD_COMPRESSION`: compressed framing is not followed;
    /// - `QUERY_ATTRIBUTES`: changes the layout of COM_QUERY;
    /// - `OPTIONAL_RESULTSET_METADATA` (MySQL 8) and MariaDB `COM_MULTI`: reply shapes the
    ///   observer does not follow; both are optional optimisations clients do without.
    pub const HIDDEN: u64 = SSL
        | COMPRESS
        | ZSTD_COMPRESSION
        | QUERY_ATTRIBUTES
        | OPTIONAL_RESULTSET_METADATA
        | MARIADB_COM_MULTI;
}

/// Server status flags carried by OK and EOF packets.
pub mod status {
    pub const IN_TRANS: u16 = 0x0001;
    pub const AUTOCOMMIT: u16 = 0x0002;
    pub const MORE_RESULTS_EXISTS: u16 = 0x0008;
    pub const CURSOR_EXISTS: u16 = 0x0040;
    pub const LAST_ROW_SENT: u16 = 0x0080;
}

/// Command bytes (first payload byte of a client packet with sequence id 0).
pub mod com {
    pub const SLEEP: u8 = 0x00;
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const CREATE_DB: u8 = 0x05;
    pub const DROP_DB: u8 = 0x06;
    pub const REFRESH: u8 = 0x07;
    pub const SHUTDOWN: u8 = 0x08;
    pub const STATISTICS: u8 = 0x09;
    pub const PROCESS_INFO: u8 = 0x0a;
    pub const CONNECT: u8 = 0x0b;
    pub const PROCESS_KILL: u8 = 0x0c;
    pub const DEBUG: u8 = 0x0d;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const BINLOG_DUMP: u8 = 0x12;
    pub const REGISTER_SLAVE: u8 = 0x15;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_SEND_LONG_DATA: u8 = 0x18;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const STMT_FETCH: u8 = 0x1c;
    pub const BINLOG_DUMP_GTID: u8 = 0x1e;
    pub const RESET_CONNECTION: u8 = 0x1f;
    pub const STMT_BULK_EXECUTE: u8 = 0xfa;
    pub const MULTI: u8 = 0xfe;
}
