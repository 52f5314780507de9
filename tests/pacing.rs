//! Pacing beyond speed, through the real binary against a real HTTP target: `[job] qps`
//! holds an average arrival rate with the recorded order and spacing, `[job] max_gap`
//! cuts idle time, and `[job] duration` loops the recording, each pass after the last. Rates are read from the schedule the dispatcher wrote (the raw sink's
//! due instants), not from arrival times, which a shared machine shifts.

mod common;

use common::*;

/// A recording of `gaps_ms.len() + 1` GETs of `/k/0`, `/k/1` …, the gaps between them given.
fn recording(dir: &std::path::Path, gaps_ms: &[usize]) -> std::path::PathBuf {
    let mut t = T0;
    let mut lines = vec![format!(r#"{{"ts":{t},"method":"GET","url":"/k/0"}}"#)];
    for (i, gap) in gaps_ms.iter().enumerate() {
        t += gap;
        lines.push(format!(r#"{{"ts":{t},"method":"GET","url":"/k/{}"}}"#, i + 1));
    }
    let path = dir.join("r.jsonl");
    std::fs::write(&path, lines.join("\n")).expect("write");
    path
}

/// 1,000 records over 100 s, spaced unevenly (gaps of 20 to 180 ms), at `qps = 100`: a 10 s
/// job whose schedule averages 100 requests a second within 2 %, in the recorded order,
/// each gap the recorded one scaled by the same factor once the average has settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qps_holds_the_average_rate_and_the_recorded_order() {
    let target = Capture::start().await;
    let dir = temp_dir("qps");
    let gaps: Vec<usize> = (0..999).map(|i| 20 + (i * 37) % 161).collect();
    let recorded_span: usize = gaps.iter().sum();
    let rec = recording(&dir, &gaps);
    let job = write_job(&dir, &target.url(), &rec, "qps = 100", &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(r["totals"]["sent"], 1000, "{}", r["totals"]);
    assert_eq!(r["settings"]["qps"], 100.0, "{}", r["settings"]);
    assert_eq!(r["settings"]["speed"], serde_json::Value::Null);

    let dues = raw_dues(&dir);
    let span_s = (dues[999] - dues[0]) as f64 / 1e6;
    let rate = 999.0 / span_s;
    assert!((98.0..=102.0).contains(&rate), "{rate:.2} requests/s over {span_s:.3} s");
    let order: Vec<String> = (0..1000).map(|i| format!("GET /k/{i}")).collect();
    assert_eq!(raw_endpoints_by_due(&dir), order, "the recorded order");
    // Late in the job the factor is settled: each gap is its recorded one times the same
    // factor, the recording's average rate over 100 requests a second (within 5 %: the
    // estimate is the average so far).
    let factor = 999.0 / (recorded_span as f64 / 1000.0) / 100.0;
    for i in 900..999 {
        let got = (dues[i + 1] - dues[i]) as f64 / 1000.0;
        let want = gaps[i] as f64 * factor;
        assert!((got - want).abs() < 0.05 * want + 0.01, "gap {i}: {got:.3} ms, recorded {} ms", gaps[i]);
    }
    assert_eq!(target.requests().len(), 1000);
}

/// A recording with a long silence in its middle (100 records 10 ms apart, 10 s of nothing,
/// 100 more), looped at `qps = 200` for 4 s: 800 requests within 2 %, whatever the shape
/// (the average-so-far estimate alone sent 221.5 a second over such a job).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qps_holds_over_a_recording_with_a_long_silence() {
    let target = Capture::start().await;
    let dir = temp_dir("qps-silence");
    let gaps: Vec<usize> = (0..199).map(|i| if i == 99 { 10_000 } else { 10 }).collect();
    let rec = recording(&dir, &gaps);
    let job = write_job(&dir, &target.url(), &rec, "qps = 200\nduration = \"4s\"", &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    let sent = r["totals"]["sent"].as_u64().expect("sent");
    assert!((784..=816).contains(&sent), "{sent} requests in 4 s at 200 a second: {}", r["totals"]);
    let dues = raw_dues(&dir);
    let start = r["started_unix_us"].as_i64().expect("start");
    let per_second: Vec<usize> = (0..4)
        .map(|s| {
            dues.iter().filter(|&&d| d >= start + s * 1_000_000 && d < start + (s + 1) * 1_000_000).count()
        })
        .collect();
    assert!(per_second.iter().all(|n| (180..=220).contains(n)), "each second near 200: {per_second:?}");
    assert_eq!(r["totals"]["balanced"], true, "{}", r["totals"]);
}

/// Gaps longer than `max_gap` are cut to it: a recording spanning 70.5 s is scheduled over
/// 0.9 s, the short gaps as recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_gap_cuts_idle_time_out_of_the_schedule() {
    let target = Capture::start().await;
    let dir = temp_dir("max-gap");
    let rec = recording(&dir, &[100, 10_000, 100, 60_000, 200, 100]);
    let job = write_job(&dir, &target.url(), &rec, "max_gap = \"300ms\"", &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    assert_eq!(r["totals"]["sent"], 7, "{}", r["totals"]);
    let dues = raw_dues(&dir);
    let offsets_ms: Vec<i64> = dues.iter().map(|d| (d - dues[0]) / 1000).collect();
    assert_eq!(offsets_ms, vec![0, 100, 400, 500, 800, 1_000, 1_100], "gaps of 10 s and 60 s cut to 300 ms");
    assert!(r["duration_s"].as_f64().expect("duration") < 30.0, "not the recorded 70 s");
}

/// Ten records 100 ms apart at speed 4 (25 ms): a pass spans 225 ms and the next starts a
/// mean gap after it, 250 ms in. `duration = "750ms"` holds exactly three passes: 30
/// requests, due every 25 ms in the recorded order three times, each pass's input counted,
/// and the fourth pass (due at 750 ms) never read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duration_loops_the_recording_pass_after_pass() {
    let target = Capture::start().await;
    let dir = temp_dir("loop");
    let rec = recording(&dir, &[100; 9]);
    let job = write_job(&dir, &target.url(), &rec, "speed = 4\nduration = \"750ms\"", &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    let c = &r["totals"];
    assert_eq!(c["sent"], 30, "{c}");
    assert_eq!(c["passes"], serde_json::json!([10, 10, 10]), "{c}");
    assert_eq!((c["input"].as_u64(), c["out_of_range"].as_u64()), (Some(30), Some(0)), "{c}");
    assert_eq!(c["balanced"], true);
    let dues = raw_dues(&dir);
    let offsets_ms: Vec<i64> = dues.iter().map(|d| (d - dues[0]) / 1000).collect();
    assert_eq!(offsets_ms, (0..30).map(|i| i * 25).collect::<Vec<i64>>());
    let thrice: Vec<String> = (0..30).map(|i| format!("GET /k/{}", i % 10)).collect();
    assert_eq!(raw_endpoints_by_due(&dir), thrice, "each pass in the recorded order");
}

/// A duration that ends inside a pass cuts it: records due at or after it are not sent
/// and count out of range, so the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duration_inside_a_pass_cuts_it() {
    let target = Capture::start().await;
    let dir = temp_dir("duration-cut");
    let rec = recording(&dir, &[100; 9]);
    let job = write_job(&dir, &target.url(), &rec, "speed = 4\nduration = \"360ms\"", &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    let c = &r["totals"];
    // 250 ms, 275, … 350 of the second pass are due before 360 ms: 10 + 5.
    assert_eq!(c["sent"], 15, "{c}");
    let passes: Vec<u64> =
        c["passes"].as_array().expect("passes").iter().filter_map(|v| v.as_u64()).collect();
    assert_eq!(passes.len(), 2, "{c}");
    assert_eq!(passes[0], 10);
    assert_eq!(c["out_of_range"].as_u64(), Some(passes[1] - 5), "the rest of the second pass read: {c}");
    assert_eq!(c["balanced"], true, "{c}");
}

/// `[[job.stages]]` at 50 requests a second for a second, then a ramp to 200 over the
/// next: about 50 requests due in the first second and 125 in the second (the ramp's
/// mean, 125 a second), none after the stages end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stages_change_the_rate_at_their_boundaries() {
    let target = Capture::start().await;
    let dir = temp_dir("stages");
    let rec = recording(&dir, &[10; 499]);
    let stages = "qps = 50\n[[job.stages]]\nduration = \"1s\"\nqps = 50\n[[job.stages]]\nduration = \"1s\"\nqps = 200\n";
    let job = write_job(&dir, &target.url(), &rec, stages, &raw_sink(&dir));
    let r = run_job(&job, &dir, &[]).await;
    let dues = raw_dues(&dir);
    let start = r["started_unix_us"].as_i64().expect("start");
    let in_second = |s: i64| {
        dues.iter().filter(|&&d| d >= start + s * 1_000_000 && d < start + (s + 1) * 1_000_000).count()
    };
    let (first, second) = (in_second(0), in_second(1));
    assert!((48..=52).contains(&first), "50 a second for the first stage: {first}");
    assert!((115..=135).contains(&second), "the ramp from 50 to 200 a second: {second}");
    assert_eq!(dues.iter().filter(|&&d| d >= start + 2_000_000).count(), 0, "the job ends with its stages");
    assert_eq!(r["totals"]["sent"].as_u64(), Some(dues.len() as u64));
    assert_eq!(r["settings"]["qps"], 200.0, "the last stage's target: {}", r["settings"]);
}
