//! What every store does with attempt logs and samples: listed in pages, read one at a time,
//! kept for a project's last runs.

use super::*;

/// An attempt's output as the journal receives it.
fn output(
    run: &RunId,
    when: i64,
    item: &str,
    attempt: u32,
    stdout: &str,
    stderr: &str,
) -> Arc<Event> {
    event(
        Some(run),
        when,
        EventKind::AttemptOutput {
            stage: if item == "-" { "publish" } else { "load" }.into(),
            item: (item != "-").then(|| item.into()),
            attempt,
            output: Box::new(AttemptOutput {
                stdout: stdout.into(),
                stderr: stderr.into(),
                stdout_cut: u64::from(attempt) * 10,
                stderr_cut: 0,
            }),
        },
    )
}

pub(super) async fn logs_list_in_pages_without_their_output_and_read_one_at_a_time(
    store: Arc<dyn Store>,
) {
    for (project, id) in [("p", "run-1"), ("q", "run-2")] {
        assert_eq!(store.claim_run(&claim(project, id)).await.unwrap(), None);
    }
    let (one, two) = (RunId::new("run-1"), RunId::new("run-2"));
    store
        .append("p", &[output(&one, 3, "a", 1, "out\0put\n", "é\n")])
        .await
        .unwrap();
    store
        .append("q", &[output(&two, 4, "a", 1, "another run's", "")])
        .await
        .unwrap();
    let events = [
        output(&one, 5, "a", 2, "", ""),
        output(&one, 6, "b", 1, "b's", "err"),
        output(&one, 7, "-", 1, "whole stage", ""),
    ];
    store.append("p", &events).await.unwrap();

    let all = store
        .log_entries("run-1", &LogFilter::default(), 0, 100)
        .await
        .unwrap();
    let listed: Vec<_> = all
        .iter()
        .map(|l| {
            (
                l.stage.as_str(),
                l.item.as_deref(),
                l.attempt,
                l.at,
                l.stdout_bytes,
                l.stderr_bytes,
                l.stdout_cut,
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("load", Some("a"), 1, ms(3), 8, 3, 10),
            ("load", Some("a"), 2, ms(5), 0, 0, 20),
            ("load", Some("b"), 1, ms(6), 3, 3, 10),
            ("publish", None, 1, ms(7), 11, 0, 10),
        ],
        "in the order kept, sizes in bytes"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id));

    // Pages: after an id, at most a limit.
    let page = store
        .log_entries("run-1", &LogFilter::default(), all[0].id, 2)
        .await
        .unwrap();
    assert_eq!(page, all[1..3]);
    let rest = store
        .log_entries("run-1", &LogFilter::default(), all[3].id, 2)
        .await
        .unwrap();
    assert!(rest.is_empty());
    let picked = |stage: Option<&str>, item: Option<&str>, attempt: Option<i64>| LogFilter {
        stage: stage.map(str::to_owned),
        item: item.map(str::to_owned),
        attempt,
    };
    for (filter, found) in [
        (picked(Some("load"), None, None), &all[..3]),
        (picked(None, Some("a"), None), &all[..2]),
        (picked(Some("load"), Some("a"), Some(2)), &all[1..2]),
        (picked(None, None, Some(3)), &all[..0]),
    ] {
        assert_eq!(
            store.log_entries("run-1", &filter, 0, 100).await.unwrap(),
            found,
            "{filter:?}"
        );
    }

    // One attempt's output, by its id, within its run only.
    let first = store.log_output("run-1", all[0].id).await.unwrap().unwrap();
    assert_eq!(first.entry, all[0]);
    assert_eq!(
        (first.stdout.as_str(), first.stderr.as_str()),
        ("out\0put\n", "é\n")
    );
    let other = store
        .log_entries("run-2", &LogFilter::default(), 0, 100)
        .await
        .unwrap();
    assert_eq!(other.len(), 1);
    assert_eq!(store.log_output("run-1", other[0].id).await.unwrap(), None);
    assert_eq!(
        store
            .log_output("run-2", other[0].id)
            .await
            .unwrap()
            .unwrap()
            .stdout,
        "another run's"
    );
    let past = all[3].id.max(other[0].id) + 1;
    assert_eq!(store.log_output("run-1", past).await.unwrap(), None);
    // What the whole-log query the CLI prints still finds, the listing finds too.
    assert_eq!(
        store
            .logs("run-1", &LogFilter::default())
            .await
            .unwrap()
            .len(),
        all.len()
    );
}

pub(super) async fn logs_and_samples_are_kept_for_the_last_runs_only(store: Arc<dyn Store>) {
    let runs = KEEP_RUNS + 2;
    for i in 0..runs {
        let id = format!("run-{i}");
        assert_eq!(store.claim_run(&claim("p", &id)).await.unwrap(), None);
        let run = RunId::new(id.as_str());
        let events = [
            event(
                Some(&run),
                i,
                EventKind::AttemptOutput {
                    stage: "load".into(),
                    item: None,
                    attempt: 1,
                    output: Box::new(AttemptOutput {
                        stdout: format!("run {i}"),
                        stderr: String::new(),
                        stdout_cut: 0,
                        stderr_cut: 0,
                    }),
                },
            ),
            event(
                Some(&run),
                i,
                EventKind::MetricsSampled {
                    samples: vec![MetricSample {
                        stage: None,
                        metric: "errorRate".into(),
                        value: 0.0,
                    }],
                },
            ),
            event(
                Some(&run),
                i,
                EventKind::RunFinished {
                    status: RunStatus::Succeeded,
                    duration: Duration::ZERO,
                    error: None,
                },
            ),
        ];
        store.append("p", &events).await.unwrap();
    }
    for i in 0..runs {
        let run = format!("run-{i}");
        let kept = usize::from(i >= runs - KEEP_RUNS);
        let logs = store.logs(&run, &LogFilter::default()).await.unwrap();
        assert_eq!(logs.len(), kept, "logs of {run}");
        let listed = store
            .log_entries(&run, &LogFilter::default(), 0, 10)
            .await
            .unwrap();
        assert_eq!(listed.len(), kept, "listed logs of {run}");
        assert_eq!(
            store.samples(&run, None).await.unwrap().len(),
            kept,
            "samples of {run}"
        );
    }
    assert_eq!(
        store.runs("p", 100).await.unwrap().len(),
        runs as usize,
        "runs themselves are kept"
    );
}
