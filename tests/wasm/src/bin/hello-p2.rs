//! A WASI preview 2 component (built for `wasm32-wasip2`): prints its
//! arguments and `GREETING`, writes to stderr, reads both clocks and the
//! random source (through `HashMap`'s seed), sleeps `SLEEP_MS` (default 20),
//! and exits with the code in argv[1] (default 0).
use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    for (i, arg) in std::env::args().enumerate() {
        println!("arg[{i}]={arg}");
    }
    println!("GREETING={}", std::env::var("GREETING").unwrap_or_default());
    eprintln!("this line goes to stderr");
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("wall clock after 1970");
    // 2020-01-01T00:00:00Z.
    println!("wall clock after 2020: {}", since_epoch.as_secs() > 1_577_836_800);
    let mut map = HashMap::new();
    map.insert("key", 1);
    println!("hash map works: {}", map["key"] == 1);
    let ms = std::env::var("SLEEP_MS").map_or(20, |ms| ms.parse().expect("SLEEP_MS"));
    let start = Instant::now();
    std::thread::sleep(Duration::from_millis(ms));
    println!("slept {ms} ms: {}", start.elapsed() >= Duration::from_millis(ms));
    let code = std::env::args()
        .nth(1)
        .map_or(0, |c| c.parse::<i32>().expect("exit code must be an integer"));
    println!("exiting with {code}");
    std::process::exit(code);
}
