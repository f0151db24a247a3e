//! The kernel timer against the host clock: `sleep 100` takes 100 ms ± 5 %.

use skiff_e2e::*;

#[test]
fn sleep_100ms_within_5_percent_of_host_clock() {
    // Exclusive: no other QEMU of this process competes for the CPU.
    let _g = exclusive();
    let b = boot(user_net(Machine::Microvm));
    let (mut zero, mut hundred, mut kernel) = (vec![], vec![], vec![]);
    let _ = b.diag.sleep(0); // warm up (ARP, caches)
    for _ in 0..9 {
        let (_, rtt0) = b
            .diag
            .sleep(0)
            .unwrap_or_else(|e| b.fail(&format!("sleep 0: {e}")));
        let (us, rtt) = b
            .diag
            .sleep(100)
            .unwrap_or_else(|e| b.fail(&format!("sleep 100: {e}")));
        zero.push(rtt0.as_secs_f64() * 1e3);
        hundred.push(rtt.as_secs_f64() * 1e3);
        kernel.push(us as f64 / 1e3);
    }
    let measured = median(&hundred) - median(&zero);
    eprintln!(
        "sleep 100: host {measured:.2} ms (round trips: sleep 0 {zero:.2?}, sleep 100 {hundred:.2?}); kernel says {kernel:.3?} ms"
    );
    if (measured - 100.0).abs() > 5.0 {
        b.fail(&format!(
            "sleep 100 took {measured:.2} ms by the host clock (outside 95..105 ms)"
        ));
    }
    b.shutdown();
}
