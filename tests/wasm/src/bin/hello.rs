//! Prints a few lines and exits with the code given as the first argument
//! or in `EXIT_CODE` (default 0), after sleeping `SLEEP_MS` if set.
fn main() {
    println!("hello from a Skiff pod");
    println!("args: {}", std::env::args().count());
    eprintln!("this line goes to stderr");
    let code = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("EXIT_CODE").ok())
        .map(|c| c.parse::<i32>().expect("exit code must be an integer"))
        .unwrap_or(0);
    if let Ok(ms) = std::env::var("SLEEP_MS") {
        std::thread::sleep(std::time::Duration::from_millis(ms.parse().expect("SLEEP_MS")));
    }
    println!("exiting with {code}");
    std::process::exit(code);
}
