//! The built-in rules: what common tools print when a dependency fails, as the codes healing
//! strategies match. Tried in this order, the more specific first (a wrong password before a
//! refused connection, a status before a network error); the table in docs/HEALING.md lists
//! them.
//!
//! | code | retryable | from |
//! |---|---|---|
//! | `EAUTH` | no | libpq, MySQL, HTTP 401/403, ssh, git, cloud CLIs, gRPC |
//! | `ENOSPC` | no | the system's "No space left on device", Python, PostgreSQL |
//! | `OOMKILLED` | no | exit 137 (killed by SIGKILL), out of memory |
//! | `EDEADLOCK` | yes | PostgreSQL 40P01, MySQL 1213 |
//! | `ESERIALIZATION` | yes | PostgreSQL 40001, MySQL 1205 |
//! | `EDBSTARTING` | yes | PostgreSQL starting up, shutting down or in recovery (57P03), MySQL 1053 |
//! | `ETLS` | no | certificates and handshakes: OpenSSL, Go's x509, Python, Node, curl 35/60, wget 5 |
//! | `HTTP_<status>` | 408, 425, 429, 5xx | curl -f, wget, Python, a status line; `HTTP_429` also for cloud throttling |
//! | `ENOTFOUND` | yes | DNS: curl 6, wget, libpq, MySQL, Python, Node, Go, ssh |
//! | `ECONNREFUSED` | yes | curl 7, libpq, MySQL 2003, Python, Node, Go, gRPC `UNAVAILABLE` |
//! | `ECONNRESET` | yes | libpq "server closed the connection unexpectedly", MySQL 2006/2013, curl 52/56, Python, Node, Go, ssh, git |
//! | `ETIMEDOUT` | yes | curl 28, Go "i/o timeout", Python, Node, gRPC `DEADLINE_EXCEEDED`, "timed out" |

use std::sync::Arc;

use regex::Regex;

use super::{Code, Rule, Stream};
use crate::error::Severity;

/// A rule for a line matching `pattern` on standard error.
fn text(name: &str, code: &str, severity: Severity, retryable: bool, pattern: &str) -> Rule {
    Rule {
        name: format!("builtin:{name}").into(),
        program: None,
        exit: None,
        pattern: Some(Regex::new(pattern).expect("a valid built-in pattern")),
        stream: Stream::Any,
        code: Code::Fixed(code.into()),
        severity,
        retryable,
        retry_after: None,
    }
}

/// A rule taking `HTTP_<status>` from the first group of `pattern`.
fn status(name: &str, pattern: &str) -> Rule {
    Rule {
        code: Code::HttpStatus,
        ..text(name, "", Severity::Error, false, pattern)
    }
}

/// A rule for `program` ending with status `exit`, whatever it printed.
fn exit(program: &'static str, exit: i32, code: &str, retryable: bool) -> Rule {
    Rule {
        name: format!("builtin:{program}-exit-{exit}").into(),
        program: Some(program),
        exit: Some(exit),
        pattern: None,
        stream: Stream::Any,
        code: Code::Fixed(Arc::from(code)),
        severity: Severity::Error,
        retryable,
        retry_after: None,
    }
}

/// Every built-in rule, in the order they are tried.
pub fn rules() -> Vec<Rule> {
    use Severity::{Critical, Error};
    vec![
        text(
            "authentication-failed",
            "EAUTH",
            Error,
            false,
            r"(?i)password authentication failed|no pg_hba\.conf entry|Access denied for user|ERROR 1045|Permission denied \((publickey|password|keyboard-interactive)|fatal: Authentication failed|could not read Username|InvalidClientTokenId|UnrecognizedClientException|ExpiredToken|SignatureDoesNotMatch|AccessDenied|\bUNAUTHENTICATED\b|\bPERMISSION_DENIED\b",
        ),
        text(
            "no-space-left",
            "ENOSPC",
            Critical,
            false,
            r"(?i)No space left on device|\bENOSPC\b|\[Errno 28\]|could not extend file|disk is full|disk full",
        ),
        text(
            "out-of-memory",
            "OOMKILLED",
            Critical,
            false,
            r"(?i)out of memory|OOMKilled|Cannot allocate memory|\bMemoryError\b|fatal error: runtime: out of memory|JavaScript heap out of memory",
        ),
        Rule {
            name: "builtin:killed-exit-137".into(),
            exit: Some(137),
            pattern: None,
            ..text("", "OOMKILLED", Critical, false, ".")
        },
        text(
            "deadlock",
            "EDEADLOCK",
            Error,
            true,
            r"(?i)deadlock detected|\b40P01\b|Deadlock found when trying to get lock|ERROR 1213\b",
        ),
        text(
            "serialization-failure",
            "ESERIALIZATION",
            Error,
            true,
            r"(?i)could not serialize access|\b40001\b|serialization failure|Lock wait timeout exceeded|ERROR 1205\b",
        ),
        text(
            "database-starting",
            "EDBSTARTING",
            Error,
            true,
            r"(?i)the database system is (starting up|shutting down|in recovery mode|not yet accepting connections)|\b57P03\b|Server shutdown in progress|ERROR 1053\b",
        ),
        // A TLS connection cut short is a reset, not a certificate problem.
        text(
            "tls-connection-closed",
            "ECONNRESET",
            Error,
            true,
            r"(?i)SSL connection has been closed unexpectedly|SSL SYSCALL error: EOF detected",
        ),
        text(
            "tls",
            "ETLS",
            Error,
            false,
            r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED|x509: |SSL certificate problem|self[- ]signed certificate|unable to get local issuer|SSL routines|TLS handshake|tls: |ERR_TLS_|UNABLE_TO_VERIFY_LEAF_SIGNATURE|\bSSLError\b|SSL connect error|SSL_connect|SSL_ERROR_",
        ),
        status(
            "curl-http-status",
            r"The requested URL returned error:? (\d{3})",
        ),
        status("wget-http-status", r"ERROR (\d{3}): "),
        status("python-http-error", r"HTTP ?Error:? (\d{3})"),
        status("requests-http-error", r"\b(\d{3}) (?:Client|Server) Error"),
        status("http-status-line", r"^\s*(?:< )?HTTP/[\d.]+ ([45]\d\d)\b"),
        text(
            "throttled",
            "HTTP_429",
            Error,
            true,
            r"ThrottlingException|\bThrottling\b|RequestLimitExceeded|TooManyRequests|\bSlowDown\b|Rate exceeded|\bRESOURCE_EXHAUSTED\b|rateLimitExceeded|Quota exceeded",
        ),
        text(
            "name-not-resolved",
            "ENOTFOUND",
            Error,
            true,
            r"(?i)Could not resolve host|Name or service not known|Temporary failure in name resolution|nodename nor servname|getaddrinfo (ENOTFOUND|EAI_AGAIN)|no such host|could not translate host name|unable to resolve host address|Could not resolve hostname|Unknown MySQL server host|NameResolutionError|\bgaierror\b",
        ),
        text(
            "connection-refused",
            "ECONNREFUSED",
            Error,
            true,
            r"(?i)connection refused|\bECONNREFUSED\b|\[Errno 111\]|Can't connect to MySQL server|ERROR 2003\b|ConnectionRefusedError|Couldn't connect to server|actively refused",
        ),
        text(
            "unavailable",
            "ECONNREFUSED",
            Error,
            true,
            r"\bUNAVAILABLE\b|(?i:code ?[=:] ?Unavailable)",
        ),
        text(
            "connection-reset",
            "ECONNRESET",
            Error,
            true,
            r"(?i)connection reset|\bECONNRESET\b|\[Errno 104\]|server closed the connection unexpectedly|Lost connection to MySQL server|MySQL server has gone away|ERROR 20(06|13)\b|Empty reply from server|Recv failure|broken pipe|\bEPIPE\b|ConnectionResetError|RemoteDisconnected|Connection closed by remote host|the remote end hung up unexpectedly|socket hang up",
        ),
        text(
            "timed-out",
            "ETIMEDOUT",
            Error,
            true,
            r"(?i)timed out|timeout expired|\bETIMEDOUT\b|i/o timeout|context deadline exceeded|\bDEADLINE_EXCEEDED\b|ReadTimeout|ConnectTimeout|\bTimeoutError\b|\[Errno 110\]",
        ),
        // Exit statuses, for tools run quietly (`curl -s`, `wget -q`).
        exit("curl", 6, "ENOTFOUND", true),
        exit("curl", 7, "ECONNREFUSED", true),
        exit("curl", 22, "HTTP_ERROR", true),
        exit("curl", 28, "ETIMEDOUT", true),
        exit("curl", 35, "ETLS", false),
        exit("curl", 52, "ECONNRESET", true),
        exit("curl", 56, "ECONNRESET", true),
        exit("curl", 60, "ETLS", false),
        exit("wget", 4, "ECONNRESET", true),
        exit("wget", 5, "ETLS", false),
        exit("wget", 6, "EAUTH", false),
        exit("wget", 8, "HTTP_ERROR", true),
    ]
}
