//! The monitoring `deploy/` ships: `promtool` checks the alerting rules and runs their unit
//! tests, and parses every query of the Grafana dashboard; and every metric the rules and the
//! dashboard query is one `serve` exports, with the labels they match on and aggregate by.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

mod common;
use common::{Receiver, Served, Workspace, http, tool};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Value {
    let path = deploy().join("prometheus/migrationpilot.rules.yml");
    serde_saphyr::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn dashboard() -> Value {
    let path = deploy().join("grafana/migrationpilot.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every alerting rule: its name and expression.
fn alerting_rules(rules: &Value) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for group in rules["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("a group's rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            let expr = rule["expr"].as_str().expect("a rule's expr");
            found.push((name.to_owned(), expr.to_owned()));
        }
    }
    found
}

/// Every query of the dashboard's panels (rows' nested panels included): the panel's title
/// and the query.
fn panel_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, found: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().expect("every target has an expr");
                found.push((title.clone(), expr.to_owned()));
            }
            walk(&panel["panels"], found);
        }
    }
    let mut found = Vec::new();
    walk(&dashboard["panels"], &mut found);
    found
}

/// A dashboard query with Grafana's variables replaced as Grafana would, so that Prometheus
/// parses it.
fn as_prometheus_sees_it(expr: &str) -> String {
    let replaced = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "6h")
        .replace("$project", ".+");
    assert!(
        !replaced.contains('$'),
        "a variable the dashboard does not define in `{expr}`"
    );
    replaced
}

#[test]
#[cfg_attr(
    missing_promtool,
    ignore = "needs promtool: source .ci/services.sh start"
)]
fn promtool_checks_and_tests_the_rules_and_parses_every_dashboard_query() {
    let Some(promtool) = tool("MIGRATIONPILOT_TEST_PROMTOOL", "promtool") else {
        return;
    };
    let promtool_in = |dir: &Path, args: &[&str]| {
        let out = std::process::Command::new(&promtool)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let prometheus = deploy().join("prometheus");
    promtool_in(&prometheus, &["check", "rules", "migrationpilot.rules.yml"]);
    promtool_in(
        &prometheus,
        &["test", "rules", "migrationpilot.rules.test.yml"],
    );

    // Each dashboard query as a recording rule: `check rules` parses it as Prometheus would.
    let queries = panel_queries(&dashboard());
    assert!(!queries.is_empty(), "the dashboard has no query");
    let mut text = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in queries.iter().enumerate() {
        text.push_str(&format!(
            "      - record: dashboard:query{i}\n        expr: {}\n",
            serde_json::to_string(&as_prometheus_sees_it(expr)).unwrap()
        ));
    }
    let work = Workspace::new();
    work.file("dashboard.rules.yml", &text);
    promtool_in(work.path(), &["check", "rules", "dashboard.rules.yml"]);
}

/// Runs, in `work`, a pipeline whose run makes every family of the exporter appear: a check
/// that is unhealthy until an item's second attempt (a health change, a held stage), items
/// that fail once (retries, attempts by outcome) under a breaker that opens on one failure
/// (its state, and its alert, delivered to a webhook), and a run that ends.
fn run_a_pipeline_that_shows_every_family(work: &Workspace) {
    // Each item waits until the check has run once, and failed: `api-up` is made only by an
    // item's second attempt.
    work.script(
        "extract.sh",
        r#"while [ ! -s checks.log ]; do sleep 0.01; done
if [ "$MIGRATIONPILOT_ATTEMPT" -lt 2 ]; then echo "read ECONNRESET" >&2; exit 1; fi
touch api-up"#,
    );
    work.file(
        "pipeline.yaml",
        &format!(
            r#"
project: deploy
stages:
  - name: extract
    command: ["./extract.sh", "{{item}}"]
    items: [a, b]
  - name: load
    command: ["true"]
    dependsOn: [api]
healing:
  healthMonitor:
    thresholds: {{ consecutiveFailures: 1, consecutiveSuccesses: 1 }}
    checks:
      - {{ name: api, type: command, stage: load, command: ["sh", "-c", "echo >> checks.log; test -e api-up"], interval: 50ms }}
  circuitBreaker: {{ failureThreshold: 1, successThreshold: 1, halfOpenRequests: 1, timeout: 100ms }}
  strategies:
    - name: retry-transient
      triggers: [{{ type: error, pattern: ECONNRESET }}]
      action: retry
      config: {{ maxAttempts: 3, initialDelay: 10 }}
  alerts:
    groupWait: 50ms
    channels:
      - {{ type: webhook, url: "http://127.0.0.1:{}/hook" }}
"#,
            Receiver::start().port
        ),
    );
    let out = work.cmd().args(["run", "pipeline.yaml"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

type Labels = BTreeSet<String>;

/// What a `/metrics` exposition holds: each family's type, and the label names of each sample
/// name's series.
struct Exposition {
    types: BTreeMap<String, String>,
    samples: BTreeMap<String, Labels>,
}

impl Exposition {
    fn parse(text: &str) -> Exposition {
        let mut types = BTreeMap::new();
        let mut samples: BTreeMap<String, Labels> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE NAME KIND");
                types.insert(name.to_owned(), kind.to_owned());
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let end = line.find(['{', ' ']).expect("a sample line");
            let labels = samples.entry(line[..end].to_owned()).or_default();
            if line[end..].starts_with('{') {
                labels.extend(label_names(&line[end + 1..]));
            }
        }
        Exposition { types, samples }
    }

    /// The family a query's metric name reads (a histogram's for its `_bucket`, `_count` and
    /// `_sum`) and the label names its series carry, with the `job` and `instance` a scrape
    /// adds; `None` when serve exports no such series.
    fn resolve(&self, name: &str) -> Option<(String, Labels)> {
        let labels = self.samples.get(name)?;
        let family = if self.types.contains_key(name) {
            name.to_owned()
        } else {
            ["_bucket", "_count", "_sum"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|family| self.types.get(*family).map(String::as_str) == Some("histogram"))?
                .to_owned()
        };
        let mut labels = labels.clone();
        labels.extend(["job".to_owned(), "instance".to_owned()]);
        Some((family, labels))
    }
}

/// The label names of a sample's `name="value",…}` (values may hold `,`, `}` and escapes).
fn label_names(mut rest: &str) -> Vec<String> {
    let mut names = Vec::new();
    while let Some((name, after)) = rest.split_once("=\"") {
        names.push(name.trim_start_matches(',').to_owned());
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
        if rest.starts_with('}') {
            break;
        }
    }
    names
}

/// A PromQL token, as far as the queries here need: strings keep their text, ranges
/// (`[5m]`, `[$__range]`) and numbers (`0.95`, `15m`) only their place.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Number,
    Range,
    Open,
    Close,
    OpenBrace,
    CloseBrace,
    Comma,
    Op(String),
}

fn tokens(expr: &str) -> Vec<Token> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        i += 1;
        match c {
            c if c.is_whitespace() => {}
            '(' => out.push(Token::Open),
            ')' => out.push(Token::Close),
            '{' => out.push(Token::OpenBrace),
            '}' => out.push(Token::CloseBrace),
            ',' => out.push(Token::Comma),
            '[' => {
                while i < chars.len() && chars[i] != ']' {
                    i += 1;
                }
                assert!(i < chars.len(), "an unclosed `[` in `{expr}`");
                i += 1;
                out.push(Token::Range);
            }
            '"' | '\'' | '`' => {
                let mut text = String::new();
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    text.extend(chars.get(i));
                    i += 1;
                }
                assert!(i < chars.len(), "an unclosed string in `{expr}`");
                i += 1;
                out.push(Token::Str(text));
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i]))
                {
                    i += 1;
                }
                out.push(Token::Ident(chars[start..i].iter().collect()));
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                    i += 1;
                }
                out.push(Token::Number);
            }
            _ => {
                let two: String = chars[start..(start + 2).min(chars.len())].iter().collect();
                if ["==", "!=", ">=", "<=", "=~", "!~"].contains(&two.as_str()) {
                    i += 1;
                    out.push(Token::Op(two));
                } else if "+-*/%^<>=".contains(c) {
                    out.push(Token::Op(c.to_string()));
                } else {
                    panic!("`{c}` in `{expr}` is not PromQL this test reads");
                }
            }
        }
    }
    out
}

/// What an expression yields: a scalar, or series that all carry these label names.
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Scalar,
    Vector(Labels),
}

/// One selector of a query: the metric name as written, its family, and its matchers.
#[derive(Debug)]
struct Selector {
    name: String,
    family: Option<String>,
    matchers: Vec<(String, String, String)>,
}

/// Reads one query against `/metrics`: the selectors it makes, and every label name it uses
/// that the series it applies to do not carry.
struct Query<'a> {
    expr: &'a str,
    tokens: Vec<Token>,
    at: usize,
    served: &'a Exposition,
    selectors: Vec<Selector>,
    problems: Vec<String>,
}

const AGGREGATIONS: [&str; 12] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
];

/// Functions whose result carries the labels of their vector argument.
const KEEP_LABELS: [&str; 12] = [
    "rate", "irate", "increase", "delta", "idelta", "deriv", "round", "abs", "ceil", "floor",
    "changes", "resets",
];

fn label_set(names: &[&str]) -> Labels {
    names.iter().map(|n| n.to_string()).collect()
}

impl<'a> Query<'a> {
    fn read(expr: &'a str, served: &'a Exposition) -> Query<'a> {
        let mut query = Query {
            expr,
            tokens: tokens(expr),
            at: 0,
            served,
            selectors: Vec::new(),
            problems: Vec::new(),
        };
        query.expression(0);
        assert_eq!(
            query.at,
            query.tokens.len(),
            "`{expr}`: the test's reader stopped at token {} of {:?}",
            query.at,
            query.tokens
        );
        query
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn next(&mut self) -> Token {
        let token = self.tokens.get(self.at).cloned();
        self.at += 1;
        token.unwrap_or_else(|| panic!("`{}` ends too early for the test's reader", self.expr))
    }

    fn expect(&mut self, token: Token) {
        let got = self.next();
        assert_eq!(got, token, "in `{}`", self.expr);
    }

    fn keyword(&self) -> Option<&str> {
        match self.peek() {
            Some(Token::Ident(word)) => Some(word),
            _ => None,
        }
    }

    /// `( name, … )`.
    fn label_list(&mut self) -> Labels {
        self.expect(Token::Open);
        let mut names = Labels::new();
        loop {
            match self.next() {
                Token::Ident(name) => {
                    names.insert(name);
                }
                Token::Comma => {}
                Token::Close => return names,
                other => panic!("{other:?} in a label list of `{}`", self.expr),
            }
        }
    }

    fn require(&mut self, names: &Labels, on: &Shape, what: &str) {
        if let Shape::Vector(labels) = on {
            for name in names.difference(labels) {
                self.problems.push(format!(
                    "`{}`: {what} uses `{name}`, which its series do not carry (they carry {labels:?})",
                    self.expr
                ));
            }
        }
    }

    /// A binary expression whose operators bind at least as tightly as `min`.
    fn expression(&mut self, min: u8) -> Shape {
        let mut left = self.unary();
        loop {
            let (op, precedence) = match self.peek() {
                Some(Token::Ident(w)) if w == "or" => (w.clone(), 1),
                Some(Token::Ident(w)) if w == "and" || w == "unless" => (w.clone(), 2),
                Some(Token::Op(o)) if ["==", "!=", ">", "<", ">=", "<="].contains(&o.as_str()) => {
                    (o.clone(), 3)
                }
                Some(Token::Op(o)) if o == "+" || o == "-" => (o.clone(), 4),
                Some(Token::Op(o)) if ["*", "/", "%"].contains(&o.as_str()) => (o.clone(), 5),
                Some(Token::Op(o)) if o == "^" => (o.clone(), 6),
                _ => return left,
            };
            if precedence < min {
                return left;
            }
            self.at += 1;
            if self.keyword() == Some("bool") {
                self.at += 1;
            }
            let mut on = None;
            let mut ignoring = None;
            match self.keyword() {
                Some("on") => {
                    self.at += 1;
                    on = Some(self.label_list());
                }
                Some("ignoring") => {
                    self.at += 1;
                    ignoring = Some(self.label_list());
                }
                _ => {}
            }
            let mut group = None;
            if let Some(side @ ("group_left" | "group_right")) = self.keyword() {
                group = Some(side.to_owned());
                self.at += 1;
                if self.peek() == Some(&Token::Open) {
                    self.label_list();
                }
            }
            let right = self.expression(precedence + 1);
            left = self.combine(&op, left, right, on, ignoring, group);
        }
    }

    fn combine(
        &mut self,
        op: &str,
        left: Shape,
        right: Shape,
        on: Option<Labels>,
        ignoring: Option<Labels>,
        group: Option<String>,
    ) -> Shape {
        let (l, r) = match (&left, &right) {
            (Shape::Scalar, Shape::Scalar) => return Shape::Scalar,
            (Shape::Vector(_), Shape::Scalar) => return left,
            (Shape::Scalar, Shape::Vector(_)) => return right,
            (Shape::Vector(l), Shape::Vector(r)) => (l.clone(), r.clone()),
        };
        if let Some(on) = &on {
            self.require(on, &left, &format!("`{op} on`"));
            self.require(on, &right, &format!("`{op} on`"));
        }
        match (op, on, ignoring, group.as_deref()) {
            ("or", ..) => Shape::Vector(l.intersection(&r).cloned().collect()),
            ("and" | "unless", ..) => Shape::Vector(l),
            (_, _, _, Some("group_left")) => Shape::Vector(l),
            (_, _, _, Some("group_right")) => Shape::Vector(r),
            (_, Some(on), _, _) => Shape::Vector(on),
            (_, None, Some(ignoring), _) => {
                Shape::Vector(l.difference(&ignoring).cloned().collect())
            }
            (_, None, None, _) => {
                if l != r {
                    self.problems.push(format!(
                        "`{}`: `{op}` matches series of labels {l:?} with series of labels {r:?}, which never match",
                        self.expr
                    ));
                }
                Shape::Vector(l)
            }
        }
    }

    fn unary(&mut self) -> Shape {
        if self.peek() == Some(&Token::Op("-".into())) {
            self.at += 1;
        }
        let shape = self.primary();
        if self.peek() == Some(&Token::Range) {
            self.at += 1;
        }
        if self.keyword() == Some("offset") {
            self.at += 1;
            self.expect(Token::Number);
        }
        shape
    }

    fn primary(&mut self) -> Shape {
        match self.next() {
            Token::Number => Shape::Scalar,
            Token::Str(_) => Shape::Scalar,
            Token::Open => {
                let shape = self.expression(0);
                self.expect(Token::Close);
                shape
            }
            Token::Ident(word) if AGGREGATIONS.contains(&word.as_str()) => self.aggregation(&word),
            Token::Ident(word) if self.peek() == Some(&Token::Open) => self.function(&word),
            Token::Ident(name) => self.selector(name),
            other => panic!("{other:?} where `{}` needs an expression", self.expr),
        }
    }

    fn aggregation(&mut self, op: &str) -> Shape {
        let mut grouping = None;
        if let Some(kind @ ("by" | "without")) = self.keyword() {
            let kind = kind.to_owned();
            self.at += 1;
            grouping = Some((kind, self.label_list()));
        }
        self.expect(Token::Open);
        if ["topk", "bottomk", "quantile", "count_values"].contains(&op) {
            self.expression(0);
            self.expect(Token::Comma);
        }
        let input = self.expression(0);
        self.expect(Token::Close);
        if grouping.is_none()
            && let Some(kind @ ("by" | "without")) = self.keyword()
        {
            let kind = kind.to_owned();
            self.at += 1;
            grouping = Some((kind, self.label_list()));
        }
        let Shape::Vector(labels) = &input else {
            panic!("`{}`: {op} of a scalar", self.expr);
        };
        match grouping {
            Some((kind, names)) if kind == "by" => {
                self.require(&names, &input, &format!("`{op} by`"));
                Shape::Vector(names)
            }
            Some((_, names)) => {
                self.require(&names, &input, &format!("`{op} without`"));
                Shape::Vector(labels.difference(&names).cloned().collect())
            }
            None => Shape::Vector(Labels::new()),
        }
    }

    fn function(&mut self, name: &str) -> Shape {
        self.expect(Token::Open);
        let mut args = Vec::new();
        while self.peek() != Some(&Token::Close) {
            args.push(self.expression(0));
            if self.peek() == Some(&Token::Comma) {
                self.at += 1;
            }
        }
        self.expect(Token::Close);
        let vector = args.iter().find(|a| matches!(a, Shape::Vector(_))).cloned();
        match name {
            "histogram_quantile" => {
                let input = vector.expect("histogram_quantile of a vector");
                self.require(&label_set(&["le"]), &input, "histogram_quantile");
                let Shape::Vector(mut labels) = input else {
                    unreachable!()
                };
                labels.remove("le");
                Shape::Vector(labels)
            }
            "absent" => Shape::Vector(Labels::new()),
            "time" => Shape::Scalar,
            name if KEEP_LABELS.contains(&name) || name.ends_with("_over_time") => {
                vector.unwrap_or_else(|| panic!("`{}`: {name} of no vector", self.expr))
            }
            name => panic!(
                "`{}`: the test's reader does not know what `{name}` does to labels",
                self.expr
            ),
        }
    }

    fn selector(&mut self, name: String) -> Shape {
        let mut matchers = Vec::new();
        if self.peek() == Some(&Token::OpenBrace) {
            self.at += 1;
            loop {
                match self.next() {
                    Token::CloseBrace => break,
                    Token::Comma => {}
                    Token::Ident(label) => {
                        let Token::Op(op) = self.next() else {
                            panic!("a matcher without its operator in `{}`", self.expr)
                        };
                        let Token::Str(value) = self.next() else {
                            panic!("a matcher without its value in `{}`", self.expr)
                        };
                        matchers.push((label, op, value));
                    }
                    other => panic!("{other:?} among the matchers of `{}`", self.expr),
                }
            }
        }
        let matched: Labels = matchers.iter().map(|(l, _, _)| l.clone()).collect();
        let (family, labels) = if name.starts_with("migrationpilot_") {
            match self.served.resolve(&name) {
                Some((family, labels)) => (Some(family), labels),
                None => {
                    self.problems.push(format!(
                        "`{}` queries `{name}`, of which serve exports no series",
                        self.expr
                    ));
                    (None, matched.clone())
                }
            }
        } else {
            // Prometheus's own series of a scrape target.
            assert_eq!(
                name, "up",
                "`{}` queries `{name}`, neither the exporter's nor Prometheus's `up`",
                self.expr
            );
            (None, label_set(&["job", "instance"]))
        };
        let shape = Shape::Vector(labels);
        self.require(&matched, &shape, &format!("a matcher of `{name}`"));
        self.selectors.push(Selector {
            name,
            family,
            matchers,
        });
        shape
    }
}

/// The collector's windows (docs/API.md, `/metrics`): the latest sample of each metric, which
/// serve's own dashboard charts; the Grafana dashboard shows every other family.
const COLLECTOR_WINDOWS: [&str; 5] = [
    "migrationpilot_error_rate",
    "migrationpilot_throughput",
    "migrationpilot_latency_p95_seconds",
    "migrationpilot_memory_usage_bytes",
    "migrationpilot_cpu_usage_ratio",
];

#[test]
fn every_metric_the_rules_and_the_dashboard_query_is_served_with_its_labels() {
    let work = Workspace::new();
    run_a_pipeline_that_shows_every_family(&work);
    let served = Served::start(&work, &["serve", "--listen", "127.0.0.1:0"], &[]);
    served.wait_ready();
    let (status, text) = http("GET", &format!("{}/metrics", served.url), &[], None);
    assert_eq!(status, 200, "{text}");
    let exposition = Exposition::parse(&text);
    let mut problems = Vec::new();

    let rules = rules();
    let alerting = alerting_rules(&rules);
    assert!(!alerting.is_empty(), "the rules file has no alerting rule");
    let mut by_rules = BTreeSet::new();
    for (alert, expr) in &alerting {
        let query = Query::read(expr, &exposition);
        assert!(
            !query.selectors.is_empty(),
            "{alert}: `{expr}` selects no series"
        );
        by_rules.extend(query.selectors.iter().filter_map(|s| s.family.clone()));
        problems.extend(query.problems);
    }

    let dashboard = dashboard();
    let queries = panel_queries(&dashboard);
    let mut by_dashboard = BTreeSet::new();
    for (panel, expr) in &queries {
        let query = Query::read(expr, &exposition);
        let exporters: Vec<&Selector> = query
            .selectors
            .iter()
            .filter(|s| s.name.starts_with("migrationpilot_"))
            .collect();
        assert!(
            !exporters.is_empty(),
            "panel `{panel}`: `{expr}` queries none of the exporter's metrics"
        );
        for selector in exporters {
            let filtered = selector
                .matchers
                .iter()
                .any(|(l, op, v)| l == "project" && op == "=~" && v == "$project");
            if !filtered {
                problems.push(format!(
                    "panel `{panel}`: `{}` in `{expr}` is not filtered on project=~\"$project\"",
                    selector.name
                ));
            }
        }
        by_dashboard.extend(query.selectors.iter().filter_map(|s| s.family.clone()));
        problems.extend(query.problems);
    }

    // The template variables: `project`'s values come from a family that has the label.
    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("templating");
    let datasource = variables
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(datasource["type"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let project = variables
        .iter()
        .find(|v| v["name"] == "project")
        .expect("a project variable");
    let definition = project["query"]["query"].as_str().expect("project's query");
    assert_eq!(project["definition"].as_str(), Some(definition));
    let (metric, label) = definition
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
        .and_then(|args| args.split_once(", "))
        .unwrap_or_else(|| panic!("project's query is {definition}"));
    match exposition.resolve(metric) {
        Some((_, labels)) if labels.contains(label) => {}
        other => problems.push(format!(
            "the project variable reads `{label}` of `{metric}`: served as {other:?}"
        )),
    }
    // Every panel's data source is the variable.
    for panel in dashboard["panels"].as_array().unwrap() {
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {}",
                panel["title"]
            );
        }
    }

    // The dashboard shows every family serve exports, but the collector's windows.
    let served_families: BTreeSet<String> = exposition
        .samples
        .keys()
        .filter_map(|name| exposition.resolve(name))
        .map(|(family, _)| family)
        .collect();
    for family in &served_families {
        if !COLLECTOR_WINDOWS.contains(&family.as_str()) && !by_dashboard.contains(family) {
            problems.push(format!("the dashboard shows nothing of `{family}`"));
        }
    }
    assert!(
        problems.is_empty(),
        "{}\n\nrules read {by_rules:?}, the dashboard {by_dashboard:?}; serve exported:\n{text}",
        problems.join("\n")
    );
}
