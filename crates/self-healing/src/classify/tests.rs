//! The built-in rules on what the real tools printed (captured from curl, wget, psql and
//! Python on loopback, in `captured/`), and on the messages other tools document.

use super::*;

fn failed<'a>(program: &'a str, stderr: &'a str, exit: Option<i32>) -> Failed<'a> {
    Failed {
        program,
        stderr,
        stdout: "",
        exit,
    }
}

fn code(found: Option<Classified>) -> (String, bool) {
    let found = found.expect("classified");
    (found.code, found.retryable)
}

fn builtin(program: &str, stderr: &str, exit: Option<i32>) -> (String, bool) {
    code(Classifier::builtin().classify(&failed(program, stderr, exit)))
}

#[test]
fn what_real_tools_printed_is_classified() {
    let cases: [(&str, &str, i32, &str, bool); 11] = [
        (
            "curl",
            include_str!("captured/curl_refused.stderr"),
            7,
            "ECONNREFUSED",
            true,
        ),
        (
            "curl",
            include_str!("captured/curl_dns.stderr"),
            6,
            "ENOTFOUND",
            true,
        ),
        (
            "curl",
            include_str!("captured/curl_503.stderr"),
            22,
            "HTTP_503",
            true,
        ),
        (
            "curl",
            include_str!("captured/curl_429.stderr"),
            22,
            "HTTP_429",
            true,
        ),
        (
            "wget",
            include_str!("captured/wget_503.stderr"),
            8,
            "HTTP_503",
            true,
        ),
        (
            "wget",
            include_str!("captured/wget_503q.stderr"),
            8,
            "HTTP_ERROR",
            true,
        ),
        (
            "python3",
            include_str!("captured/py_503.stderr"),
            1,
            "HTTP_503",
            true,
        ),
        (
            "python3",
            include_str!("captured/py_refused.stderr"),
            1,
            "ECONNREFUSED",
            true,
        ),
        (
            "python3",
            include_str!("captured/py_dns.stderr"),
            1,
            "ENOTFOUND",
            true,
        ),
        (
            "psql",
            include_str!("captured/psql_refused.stderr"),
            2,
            "ECONNREFUSED",
            true,
        ),
        (
            "psql",
            include_str!("captured/psql_auth.stderr"),
            2,
            "EAUTH",
            false,
        ),
    ];
    for (program, stderr, exit, expected, retryable) in cases {
        assert_eq!(
            builtin(program, stderr, Some(exit)),
            (expected.to_owned(), retryable),
            "{program}: {stderr}"
        );
    }
}

#[test]
fn a_retry_after_the_answer_carried_is_kept() {
    let found = Classifier::builtin()
        .classify(&Failed {
            program: "curl",
            stderr: include_str!("captured/curl_429.stderr"),
            stdout: include_str!("captured/curl_429.stdout"),
            exit: Some(22),
        })
        .unwrap();
    assert_eq!(found.code, "HTTP_429");
    assert_eq!(found.retry_after, Some(Duration::from_secs(7)));
    assert_eq!(&*found.rule, "builtin:curl-http-status");
    assert_eq!(
        found.line.as_deref(),
        Some("curl: (22) The requested URL returned error: 429")
    );
}

#[test]
fn documented_messages_of_other_tools_are_classified() {
    let cases = [
        // libpq
        (
            "psql",
            "psql: error: server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally",
            "ECONNRESET",
        ),
        (
            "psql",
            "FATAL:  the database system is starting up",
            "EDBSTARTING",
        ),
        (
            "psql",
            "FATAL:  the database system is shutting down",
            "EDBSTARTING",
        ),
        (
            "psql",
            "ERROR:  deadlock detected\nDETAIL:  Process 1 waits for ShareLock",
            "EDEADLOCK",
        ),
        (
            "psql",
            "ERROR:  could not serialize access due to concurrent update",
            "ESERIALIZATION",
        ),
        (
            "psql",
            "psql: error: could not translate host name \"db\" to address: Name or service not known",
            "ENOTFOUND",
        ),
        (
            "psql",
            "SSL connection has been closed unexpectedly",
            "ECONNRESET",
        ),
        (
            "psql",
            "ERROR:  could not extend file \"base/1/2\": No space left on device",
            "ENOSPC",
        ),
        // MySQL client
        (
            "mysql",
            "ERROR 2003 (HY000): Can't connect to MySQL server on '127.0.0.1:3306' (111)",
            "ECONNREFUSED",
        ),
        (
            "mysql",
            "ERROR 2013 (HY000): Lost connection to MySQL server during query",
            "ECONNRESET",
        ),
        (
            "mysql",
            "ERROR 1213 (40001): Deadlock found when trying to get lock; try restarting transaction",
            "EDEADLOCK",
        ),
        (
            "mysql",
            "ERROR 1205 (HY000): Lock wait timeout exceeded; try restarting transaction",
            "ESERIALIZATION",
        ),
        (
            "mysql",
            "ERROR 1045 (28000): Access denied for user 'app'@'localhost' (using password: YES)",
            "EAUTH",
        ),
        // curl and wget
        (
            "curl",
            "curl: (28) Operation timed out after 5001 milliseconds with 0 bytes received",
            "ETIMEDOUT",
        ),
        (
            "curl",
            "curl: (35) OpenSSL SSL_connect: SSL_ERROR_SYSCALL in connection to example:443",
            "ETLS",
        ),
        (
            "curl",
            "curl: (60) SSL certificate problem: self-signed certificate",
            "ETLS",
        ),
        ("curl", "curl: (52) Empty reply from server", "ECONNRESET"),
        (
            "curl",
            "curl: (56) Recv failure: Connection reset by peer",
            "ECONNRESET",
        ),
        (
            "curl",
            "curl: (22) The requested URL returned error: 401",
            "EAUTH",
        ),
        (
            "wget",
            "Resolving nope (nope)... failed: Temporary failure in name resolution.\nwget: unable to resolve host address 'nope'",
            "ENOTFOUND",
        ),
        // Python and requests
        (
            "python3",
            "ConnectionResetError: [Errno 104] Connection reset by peer",
            "ECONNRESET",
        ),
        (
            "python3",
            "requests.exceptions.ReadTimeout: HTTPConnectionPool(host='x', port=80): Read timed out. (read timeout=5)",
            "ETIMEDOUT",
        ),
        (
            "python3",
            "requests.exceptions.HTTPError: 502 Server Error: Bad Gateway for url: http://x/",
            "HTTP_502",
        ),
        (
            "python3",
            "urllib3.exceptions.NameResolutionError: Failed to resolve 'x'",
            "ENOTFOUND",
        ),
        (
            "python3",
            "ssl.SSLCertVerificationError: [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
            "ETLS",
        ),
        ("python3", "MemoryError", "OOMKILLED"),
        (
            "python3",
            "OSError: [Errno 28] No space left on device",
            "ENOSPC",
        ),
        // Node
        (
            "node",
            "Error: connect ECONNREFUSED 127.0.0.1:5432",
            "ECONNREFUSED",
        ),
        (
            "node",
            "Error: getaddrinfo ENOTFOUND db.internal",
            "ENOTFOUND",
        ),
        ("node", "Error: socket hang up", "ECONNRESET"),
        (
            "node",
            "FATAL ERROR: Reached heap limit Allocation failed - JavaScript heap out of memory",
            "OOMKILLED",
        ),
        // Go binaries
        (
            "app",
            "dial tcp 127.0.0.1:5432: connect: connection refused",
            "ECONNREFUSED",
        ),
        (
            "app",
            "read tcp 10.0.0.1:5000->10.0.0.2:443: i/o timeout",
            "ETIMEDOUT",
        ),
        (
            "app",
            "dial tcp: lookup db on 10.0.0.53:53: no such host",
            "ENOTFOUND",
        ),
        (
            "app",
            "x509: certificate signed by unknown authority",
            "ETLS",
        ),
        ("app", "context deadline exceeded", "ETIMEDOUT"),
        // gRPC
        (
            "app",
            "rpc error: code = Unavailable desc = connection error",
            "ECONNREFUSED",
        ),
        (
            "grpcurl",
            "ERROR:\n  Code: Unavailable\n  Message: connection refused",
            "ECONNREFUSED",
        ),
        ("app", "status: DEADLINE_EXCEEDED", "ETIMEDOUT"),
        ("app", "status: UNAUTHENTICATED", "EAUTH"),
        // cloud CLIs
        (
            "aws",
            "An error occurred (ThrottlingException) when calling the PutItem operation: Rate exceeded",
            "HTTP_429",
        ),
        (
            "aws",
            "An error occurred (RequestLimitExceeded) when calling the RunInstances operation",
            "HTTP_429",
        ),
        (
            "aws",
            "An error occurred (ExpiredToken) when calling the GetObject operation",
            "EAUTH",
        ),
        (
            "gcloud",
            "ERROR: (gcloud.x) RESOURCE_EXHAUSTED: Quota exceeded for quota metric",
            "HTTP_429",
        ),
        (
            "kubectl",
            "Unable to connect to the server: dial tcp 10.0.0.1:6443: i/o timeout",
            "ETIMEDOUT",
        ),
        // ssh and git
        (
            "ssh",
            "ssh: Could not resolve hostname nope: Name or service not known",
            "ENOTFOUND",
        ),
        ("ssh", "git@host: Permission denied (publickey).", "EAUTH"),
        (
            "git",
            "fatal: the remote end hung up unexpectedly",
            "ECONNRESET",
        ),
        (
            "git",
            "fatal: Authentication failed for 'https://example/repo.git/'",
            "EAUTH",
        ),
        (
            "ssh",
            "ssh: connect to host example port 22: Connection timed out",
            "ETIMEDOUT",
        ),
    ];
    for (program, stderr, expected) in cases {
        let found = Classifier::builtin().classify(&failed(program, stderr, Some(1)));
        let found = found.unwrap_or_else(|| panic!("{program}: {stderr}: not classified"));
        assert_eq!(found.code, expected, "{program}: {stderr} ({})", found.rule);
    }
}

#[test]
fn exit_statuses_classify_quiet_tools_and_a_kill() {
    assert_eq!(
        builtin("/usr/bin/curl", "", Some(7)),
        ("ECONNREFUSED".into(), true)
    );
    assert_eq!(builtin("curl", "", Some(28)), ("ETIMEDOUT".into(), true));
    assert_eq!(builtin("wget", "", Some(8)), ("HTTP_ERROR".into(), true));
    assert_eq!(
        builtin("loader", "", Some(137)),
        ("OOMKILLED".into(), false)
    );
    // Exit statuses belong to their program: psql's 7 is not curl's.
    assert!(
        Classifier::builtin()
            .classify(&failed("psql", "", Some(7)))
            .is_none()
    );
    assert!(
        Classifier::builtin()
            .classify(&failed("load.sh", "schema mismatch in orders", Some(3)))
            .is_none()
    );
}

#[test]
fn the_service_unavailable_wording_is_an_http_status_not_grpc() {
    assert_eq!(
        builtin("wget", "ERROR 503: Service Unavailable.", Some(8)),
        ("HTTP_503".into(), true)
    );
    assert_eq!(
        builtin("app", "upstream said: 404 Client Error: Not Found", Some(1)),
        ("HTTP_404".into(), false)
    );
}

#[test]
fn a_files_rules_come_first_and_name_themselves() {
    let rules: Vec<ErrorRuleConfig> = serde_json::from_str(
        r#"[{"pattern": "schema mismatch", "code": "ESCHEMA", "severity": "critical", "retryable": false},
            {"exitCode": 7, "code": "EPARTIAL"}]"#,
    )
    .unwrap();
    let classifier = Classifier::with_rules(
        rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.build(i).unwrap())
            .collect(),
    );
    let found = classifier
        .classify(&failed(
            "load.sh",
            "fatal: schema mismatch in orders",
            Some(3),
        ))
        .unwrap();
    assert_eq!(
        (
            found.code.as_str(),
            found.severity,
            found.retryable,
            &*found.rule
        ),
        ("ESCHEMA", Severity::Critical, false, "errors[0]")
    );
    // A file's rule wins over a built-in that matches too.
    let found = classifier
        .classify(&failed("curl", "curl: (7) Failed to connect", Some(7)))
        .unwrap();
    assert_eq!(
        (found.code.as_str(), &*found.rule),
        ("EPARTIAL", "errors[1]")
    );
    assert!(!classifier.is_builtin_only());
}

#[test]
fn a_rule_that_cannot_work_names_its_setting() {
    let bad = |json: &str| {
        let rule: ErrorRuleConfig = serde_json::from_str(json).unwrap();
        rule.build(0).unwrap_err().field().to_owned()
    };
    assert_eq!(bad(r#"{"code": "X"}"#), "pattern");
    assert_eq!(bad(r#"{"pattern": "(", "code": "X"}"#), "pattern");
    assert_eq!(bad(r#"{"pattern": "x", "code": "two words"}"#), "code");
}
