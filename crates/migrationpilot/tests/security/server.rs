//! See `security.rs`. `serve` cannot be held, and its API is as strict as its document: each
//! test is one way an adversary tried, over real sockets on loopback (or the wildcard address,
//! where the token rules beyond loopback apply). Limits are set small through the flags, so
//! the tests wait for a deadline to pass rather than for the defaults.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Served, Workspace, http, json};

const TOKEN: &str = "b64+token/with=padding==";
/// [`TOKEN`] as `encodeURIComponent` writes it.
const TOKEN_ENCODED: &str = "b64%2Btoken%2Fwith%3Dpadding%3D%3D";

/// A project `api` with one finished run: a stage of three items, each printing a line, and a
/// stage of its own.
fn seeded(work: &Workspace) -> String {
    work.file(
        "pipeline.yaml",
        r#"
project: api
stages:
  - name: extract
    command: ["echo", "working on {item}"]
    items: [a, b, c]
  - name: publish
    command: ["true"]
"#,
    );
    latest_run_after(work, &["run", "pipeline.yaml"])
}

/// Runs `args` (a successful run) and returns the run's id.
fn latest_run_after(work: &Workspace, args: &[&str]) -> String {
    let out = work.cmd().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let runs = work.cmd().args(["runs", "--json"]).output().unwrap();
    let runs: Value = serde_json::from_slice(&runs.stdout).unwrap();
    runs[0]["id"].as_str().unwrap().to_owned()
}

/// `serve` on `listen` with [`TOKEN`] and `flags`.
fn serve(work: &Workspace, listen: &str, flags: &[&str]) -> Served {
    let mut args = vec!["serve", "--listen", listen];
    args.extend_from_slice(flags);
    let served = Served::start(work, &args, &[("MIGRATIONPILOT_TOKEN", TOKEN)]);
    served.wait_ready();
    served
}

/// `host:port` of a served URL.
fn address(served: &Served) -> String {
    served.url.strip_prefix("http://").unwrap().to_owned()
}

fn connect(address: &str) -> TcpStream {
    let stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// Reads until the server closes the connection, or `within` has passed: what it sent, and
/// whether (and when) it closed.
fn read_to_close(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        let left = within
            .saturating_sub(started.elapsed())
            .max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (got, Some(started.elapsed())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            // Reset: closed too.
            Err(_) => return (got, Some(started.elapsed())),
        }
    }
    (got, None)
}

/// The status line of a request whose answer may never end (a stream).
fn status_line(address: &str, request: &str) -> String {
    let mut stream = connect(address);
    stream.write_all(request.as_bytes()).unwrap();
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    line
}

/// A raw request's whole answer (the server closes the connection after it).
fn raw(address: &str, request: &[u8]) -> String {
    let mut stream = connect(address);
    stream.write_all(request).unwrap();
    let (answer, closed) = read_to_close(&mut stream, Duration::from_secs(20));
    assert!(closed.is_some(), "the answer never ended");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The head of an answer, lowercased, and its body.
fn split(answer: &str) -> (String, &str) {
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((answer, ""));
    (head.to_ascii_lowercase(), body)
}

#[test]
fn a_client_that_never_finishes_its_head_is_let_go_at_the_header_timeout() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(&work, "127.0.0.1:0", &["--header-timeout", "600ms"]);
    let address = address(&served);

    // Silent from the start.
    let mut silent = connect(&address);
    // A byte every 100 ms: each read makes progress, but the head never ends.
    let mut dribbling = connect(&address);
    dribbling
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let started = Instant::now();
    let mut closed_at = None;
    for byte in b"X-Slow: ".iter().cycle().take(200) {
        if dribbling.write_all(&[*byte]).is_err() {
            closed_at = Some(started.elapsed());
            break;
        }
        // Pacing the attack, not waiting for the server.
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_at = closed_at.expect("a dribbled head was never cut");
    assert!(
        closed_at < Duration::from_secs(10),
        "cut after {closed_at:?}"
    );
    let (answer, closed) = read_to_close(&mut silent, Duration::from_secs(10));
    assert!(closed.is_some(), "a silent connection was never let go");
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));
    assert_eq!(
        http("GET", &format!("{}/healthz", served.url), &[], None).0,
        200
    );
}

#[test]
fn a_kept_alive_connection_is_let_go_at_the_idle_timeout_and_a_slow_body_gets_408() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(
        &work,
        "127.0.0.1:0",
        // The header timeout far beyond the idle one: a connection let go within seconds was
        // let go by the idle timeout.
        &[
            "--idle-timeout",
            "500ms",
            "--body-timeout",
            "500ms",
            "--header-timeout",
            "30s",
        ],
    );
    let address = address(&served);

    let mut kept = connect(&address);
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_to_close(&mut kept, Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(closed.is_some(), "an idle kept-alive connection was kept");
    assert!(
        closed < Some(Duration::from_secs(5)),
        "let go after {closed:?}"
    );
    // A HEAD for the event stream sends no stream: the connection idles like any other.
    let mut headed = connect(&address);
    headed
        .write_all(b"HEAD /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let (answer, closed) = read_to_close(&mut headed, Duration::from_secs(10));
    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"));
    assert!(
        closed.is_some() && closed < Some(Duration::from_secs(5)),
        "a connection that asked HEAD of the stream was kept: {closed:?}"
    );

    // A body promised and never sent.
    let mut slow = connect(&address);
    slow.write_all(
        format!(
            "POST /api/v1/projects/api/healing/disable HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"rea"
        )
        .as_bytes(),
    )
    .unwrap();
    let (answer, closed) = read_to_close(&mut slow, Duration::from_secs(10));
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(split(&answer).0.contains("content-type: application/json"));
    assert!(closed.is_some(), "the connection stays open after 408");
    let (_, projects) = json("GET", &format!("{}/api/v1/projects", served.url), &[], None);
    assert_eq!(
        projects[0]["healing"]["enabled"], true,
        "a body cut short changed nothing"
    );
}

#[test]
fn idle_connections_over_the_cap_give_way_and_busy_ones_turn_newcomers_away() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(
        &work,
        "127.0.0.1:0",
        &["--max-connections", "8", "--header-timeout", "60s"],
    );
    let address = address(&served);

    // Eight connections that send nothing hold every place…
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect(&address)).collect();
    // …and the probes still answer: the first takes the place of the longest waiting, and
    // the places it frees serve the next.
    for _ in 0..3 {
        let (status, body) = http("GET", &format!("{}/healthz", served.url), &[], None);
        assert_eq!(status, 200, "{body}");
    }
    let (answer, closed) = read_to_close(&mut idle[0], Duration::from_secs(10));
    assert!(
        closed.is_some(),
        "the oldest idle connection was never evicted"
    );
    assert!(answer.is_empty());
    // A flood of more: the oldest go, however many come.
    let flood: Vec<TcpStream> = (0..40).map(|_| connect(&address)).collect();
    for (i, stream) in idle.iter_mut().enumerate().skip(1) {
        assert!(
            read_to_close(stream, Duration::from_secs(10)).1.is_some(),
            "idle connection {i} outlived a flood of newer ones"
        );
    }
    assert_eq!(
        http("GET", &format!("{}/healthz", served.url), &[], None).0,
        200
    );
    drop(flood);
}

#[test]
fn when_every_connection_is_busy_a_newcomer_gets_503_at_once() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(&work, "127.0.0.1:0", &["--max-connections", "8"]);
    let address = address(&served);
    // Eight event streams are busy: a newcomer is told so at once, in JSON, and let go.
    let mut streams = Vec::new();
    for _ in 0..8 {
        let mut stream = connect(&address);
        stream
            .write_all(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut line = [0u8; 12];
        stream.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"HTTP/1.1 200");
        streams.push(stream);
    }
    let started = Instant::now();
    let answer = raw(
        &address,
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    let (head, body) = split(&answer);
    assert!(head.starts_with("http/1.1 503"), "{answer}");
    assert!(head.contains("retry-after: 1"), "{answer}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["status"], 503);
    drop(streams);
}

#[test]
fn beyond_loopback_head_and_every_method_need_the_token_in_any_case_of_bearer() {
    let work = Workspace::new();
    let run = seeded(&work);
    let served = serve(&work, "0.0.0.0:0", &[]);
    let url = |path: &str| format!("{}{path}", served.url);
    let address = address(&served);
    // HEAD's answer has a length but no body: only its status line is read.
    let head = |path: &str, auth: Option<&str>| -> String {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        status_line(
            &address,
            &format!("HEAD {path} HTTP/1.1\r\nHost: {address}\r\n{auth}\r\n"),
        )
    };
    for path in [
        "/api/v1/projects".to_owned(),
        format!("/api/v1/runs/{run}"),
        format!("/api/v1/runs/{run}/logs"),
        "/api/v1/openapi.json".to_owned(),
    ] {
        let line = head(&path, None);
        assert!(
            line.starts_with("HTTP/1.1 401"),
            "HEAD {path} without the token: {line}"
        );
        let (status, _) = http("GET", &url(&path), &[], None);
        assert_eq!(status, 401, "GET {path} without the token");
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let line = head(&path, Some(&format!("{scheme} {TOKEN}")));
            assert!(
                line.starts_with("HTTP/1.1 200"),
                "HEAD {path} with `{scheme}`: {line}"
            );
        }
    }
    // Whatever the method: the token first, the method after.
    for method in ["DELETE", "PUT", "PATCH", "OPTIONS"] {
        assert_eq!(
            http(method, &url("/api/v1/projects"), &[], None).0,
            401,
            "{method}"
        );
    }
    // Steering takes the scheme in any case too.
    let (status, answer) = json(
        "POST",
        &url("/api/v1/projects/api/healing/enable"),
        &[("Authorization", &format!("bearer {TOKEN}"))],
        None,
    );
    assert_eq!(status, 200, "{answer}");
    // Another scheme is no token.
    assert_eq!(
        http(
            "GET",
            &url("/api/v1/projects"),
            &[("Authorization", &format!("Basic {TOKEN}"))],
            None
        )
        .0,
        401
    );
}

#[test]
fn access_token_is_percent_decoded_on_the_stream_and_taken_nowhere_else() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(&work, "0.0.0.0:0", &[]);
    let address = address(&served);
    let stream = |query: &str| {
        status_line(
            &address,
            &format!(
                "GET /api/v1/events/stream{query} HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n\r\n"
            ),
        )
    };
    assert!(
        stream(&format!("?access_token={TOKEN_ENCODED}")).starts_with("HTTP/1.1 200"),
        "the token as a browser's EventSource sends it"
    );
    // Unencoded, `+` reads as a space: another token.
    assert!(stream(&format!("?access_token={TOKEN}")).starts_with("HTTP/1.1 403"));
    assert!(stream("").starts_with("HTTP/1.1 401"));
    assert!(
        stream(&format!(
            "?access_token={TOKEN_ENCODED}&access_token={TOKEN_ENCODED}"
        ))
        .starts_with("HTTP/1.1 400")
    );
    // Elsewhere the query carries no token.
    let (status, body) = json(
        "GET",
        &format!(
            "{}/api/v1/projects?access_token={TOKEN_ENCODED}",
            served.url
        ),
        &[],
        None,
    );
    assert_eq!(status, 401, "{body}");
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = json(
        "GET",
        &format!(
            "{}/api/v1/projects?access_token={TOKEN_ENCODED}",
            served.url
        ),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 400, "an unknown parameter there: {body}");
    assert!(body["error"].as_str().unwrap().contains("access_token"));
}

#[test]
fn a_token_that_is_not_visible_ascii_is_refused_at_start() {
    let work = Workspace::new();
    for token in [
        "tökén-with-ümlauts-and-more",
        "a token with spaces inside it",
        "tab\tseparated-token-value",
    ] {
        work.cmd()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("MIGRATIONPILOT_TOKEN", token)
            .assert()
            .code(2)
            .stderr(predicates::str::contains("visible ASCII"));
    }
    work.file("token.txt", "jetons-non-ascii-été-2026\n");
    work.cmd()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            "token.txt",
        ])
        .env_remove("MIGRATIONPILOT_TOKEN")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("visible ASCII"));
}

#[test]
fn bodies_over_the_limit_get_413_and_must_be_json_objects() {
    let work = Workspace::new();
    seeded(&work);
    let served = serve(&work, "127.0.0.1:0", &[]);
    let address = address(&served);
    let auth = format!("Bearer {TOKEN}");
    let trigger = format!("{}/api/v1/projects/api/healing/trigger", served.url);

    let padding = "x".repeat(70 * 1024);
    let big = format!(r#"{{"action": "restart", "stage": "publish", "pad": "{padding}"}}"#);
    let (status, body) = json("POST", &trigger, &[("Authorization", &auth)], Some(&big));
    assert_eq!(status, 413, "{body}");
    // Declared too large: refused before a byte of it is sent.
    let answer = raw(
        &address,
        format!(
            "POST /api/v1/projects/api/healing/trigger HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        )
        .as_bytes(),
    );
    let (head, body) = split(&answer);
    assert!(head.starts_with("http/1.1 413"), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    assert_eq!(serde_json::from_str::<Value>(body).unwrap()["status"], 413);

    // Arrays, strings, null: none is an object, none acts.
    for body in [r#"["restart", "publish"]"#, r#""restart""#, "null", "  "] {
        let (status, answer) = json("POST", &trigger, &[("Authorization", &auth)], Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
    }
    let (status, answer) = json(
        "POST",
        &format!("{}/api/v1/projects/api/healing/enable", served.url),
        &[("Authorization", &auth)],
        Some("[]"),
    );
    assert_eq!(status, 400, "{answer}");
    // Fields have the document's types: no null where it has none, whole numbers in bounds.
    let configure = format!("{}/api/v1/projects/api/healing/configure", served.url);
    for (body, says) in [
        (r#"{"strategy": "x", "enabled": null}"#, "enabled"),
        (r#"{"strategy": "x", "maxAttempts": 4294967296}"#, "at most"),
        (r#"{"strategy": "x", "cooldown": -1}"#, "at least 0"),
        (r#"{"strategy": "x", "priority": 1.5}"#, "whole number"),
    ] {
        let (status, answer) = json("POST", &configure, &[("Authorization", &auth)], Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(says),
            "{body}: {answer}"
        );
    }
    // Not sent as JSON.
    let answer = raw(
        &address,
        format!(
            "POST /api/v1/projects/api/healing/disable HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert!(answer.starts_with("HTTP/1.1 415"), "{answer}");

    // Nothing above was queued: the first request carried out is the first queued.
    let (status, answer) = json(
        "POST",
        &trigger,
        &[("Authorization", &auth)],
        Some(r#"{"action": "restart", "stage": "publish"}"#),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["queued"], 1, "{answer}");
}

#[test]
fn every_4xx_is_json_with_nosniff_even_for_a_bad_path_encoding() {
    let work = Workspace::new();
    let run = seeded(&work);
    let served = serve(&work, "127.0.0.1:0", &[]);
    let address = address(&served);
    for (path, status) in [
        ("/api/v1/runs/%FF".to_owned(), 400),
        ("/api/v1/runs/%FF%FE/logs".to_owned(), 400),
        ("/api/v1/projects/%C0%AF/runs".to_owned(), 400),
        (format!("/api/v1/runs/{run}/logs/not-a-number"), 400),
        ("/api/v1/runs/nope".to_owned(), 404),
        ("/nothing/here".to_owned(), 404),
    ] {
        let answer = raw(
            &address,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let (head, body) = split(&answer);
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{path}: {answer}"
        );
        assert!(
            head.contains("content-type: application/json"),
            "{path}: {answer}"
        );
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {answer}"
        );
        let body: Value = serde_json::from_str(body).unwrap();
        assert_eq!(body["status"], status, "{path}");
    }
    for path in [
        "/healthz",
        "/api/v1/projects",
        "/metrics",
        "/api/v1/openapi.json",
    ] {
        let answer = raw(
            &address,
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let (head, _) = split(&answer);
        assert!(head.starts_with("http/1.1 200"), "{path}: {answer}");
        assert!(
            head.contains("x-content-type-options: nosniff"),
            "{path}: {head}"
        );
    }
}

#[test]
fn bounds_and_parameters_are_the_documents() {
    let work = Workspace::new();
    let run = seeded(&work);
    let served = serve(&work, "127.0.0.1:0", &[]);
    let url = |path: &str| format!("{}{path}", served.url);
    let auth = format!("Bearer {TOKEN}");
    for (path, says) in [
        (format!("/api/v1/runs/{run}/events?after=-647"), "after"),
        (format!("/api/v1/runs/{run}/logs?after=-1"), "after"),
        (
            format!("/api/v1/runs/{run}/logs?limit=1001"),
            "at most 1000",
        ),
        (
            format!("/api/v1/runs/{run}/logs?attempt=4294967296"),
            "attempt",
        ),
        (format!("/api/v1/runs/{run}/logs/0"), "from 1"),
        // Unknown parameters, on operations with parameters and without.
        ("/api/v1/projects?colour=red".to_owned(), "colour"),
        (format!("/api/v1/runs/{run}?verbose=1"), "verbose"),
        ("/api/v1/projects/api/health?x=1".to_owned(), "x"),
        ("/healthz?probe=1".to_owned(), "probe"),
        ("/readyz?probe=1".to_owned(), "probe"),
        ("/metrics?format=json".to_owned(), "format"),
        ("/api/v1/openapi.json?v=2".to_owned(), "v"),
        ("/api/v1/events/stream?since=0".to_owned(), "since"),
    ] {
        let (status, body) = json("GET", &url(&path), &[], None);
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{path}: {body}"
        );
    }
    let (status, body) = json(
        "POST",
        &url("/api/v1/projects/api/healing/enable?force=1"),
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("force"), "{body}");
    // At the bounds: accepted.
    for path in [
        format!("/api/v1/runs/{run}/events?after=0&limit=1000"),
        format!("/api/v1/runs/{run}/events?after=9223372036854775807&limit=1"),
        format!("/api/v1/runs/{run}/logs?attempt=4294967295&limit=1000"),
    ] {
        let (status, body) = json("GET", &url(&path), &[], None);
        assert_eq!(status, 200, "{path}: {body}");
    }
    let last_event_id = [
        ("e17.i20.h5.s9", "200"),
        ("e1234567890123456789.i0.h0.s0", "400"),
        ("e+1.i0.h0.s0", "400"),
    ];
    let address = address(&served);
    for (id, status) in last_event_id {
        let line = status_line(
            &address,
            &format!(
                "GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nLast-Event-ID: {id}\r\n\r\n"
            ),
        );
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{id}: {line}"
        );
    }
}

#[test]
fn logs_are_listed_in_bounded_pages_and_read_one_attempt_at_a_time() {
    let work = Workspace::new();
    // Each attempt writes 200 KiB; 24 of them would be 4.8 MB in one answer.
    work.script(
        "loud.sh",
        "yes 'fifteen chars!' | head -c 204800; echo \"done $1\" >&2",
    );
    let items: Vec<String> = (0..24).map(|i| format!("i{i:02}")).collect();
    work.file(
        "loud.yaml",
        &format!(
            "project: loud\nstages:\n  - name: shout\n    command: [\"./loud.sh\", \"{{item}}\"]\n    items: [{}]\n",
            items.join(", ")
        ),
    );
    let run = latest_run_after(&work, &["run", "loud.yaml"]);
    let served = serve(&work, "127.0.0.1:0", &[]);
    let url = |path: &str| format!("{}{path}", served.url);

    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (status, text) = http(
            "GET",
            &url(&format!("/api/v1/runs/{run}/logs?after={after}&limit=10")),
            &[],
            None,
        );
        assert_eq!(status, 200, "{text}");
        assert!(
            text.len() < 8 * 1024,
            "a page of 10 is {} bytes",
            text.len()
        );
        let page: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert!(page.len() <= 10);
        for entry in &page {
            assert!(entry.get("stdout").is_none(), "{entry}");
            // The tail kept (64 KiB, from a line's start), and what was cut before it.
            let kept = entry["stdoutBytes"].as_i64().unwrap();
            assert!((60_000..=65_536).contains(&kept), "{entry}");
            assert_eq!(
                kept + entry["stdoutCut"].as_i64().unwrap(),
                204800,
                "{entry}"
            );
            let id = entry["id"].as_i64().unwrap();
            assert!(id > after, "ids grow: {id} after {after}");
            after = id;
            seen.push(id);
        }
        if page.len() < 10 {
            break;
        }
    }
    assert_eq!(seen.len(), 24, "every attempt listed once");

    let (status, text) = http(
        "GET",
        &url(&format!("/api/v1/runs/{run}/logs/{}", seen[0])),
        &[],
        None,
    );
    assert_eq!(status, 200);
    assert!(
        text.len() < 70 * 1024,
        "one attempt is {} bytes",
        text.len()
    );
    let output: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        output["stdout"].as_str().unwrap().len() as i64,
        output["stdoutBytes"].as_i64().unwrap()
    );
    assert!(
        output["stdout"]
            .as_str()
            .unwrap()
            .starts_with("fifteen chars!\n")
    );
    assert!(output["stderr"].as_str().unwrap().starts_with("done i"));
    let (status, body) = json(
        "GET",
        &url(&format!("/api/v1/runs/{run}/logs/{}", after + 1000)),
        &[],
        None,
    );
    assert_eq!(status, 404, "{body}");
}
