//! The fault path: deliberate faults give a report on serial and the defined
//! exit code, never a hang.

use std::time::Duration;

use skiff_e2e::*;

const TIMEOUT: Duration = Duration::from_secs(30);

fn faulting(kind: &str) -> (KernelExit, Node) {
    run_to_exit(
        user_net(Machine::Microvm).arg(format!("skiff.fault={kind}")),
        TIMEOUT,
    )
}

fn fault_report(node: &Node, vector: &str) {
    let lines = node.lines();
    let report = lines.iter().find_map(|l| {
        l.record()
            .filter(|r| r.level == log::Level::Error && r.target == "fault")
            .map(|r| {
                (
                    r.field("vector"),
                    r.field("rip"),
                    r.field("cr2"),
                    r.field("error"),
                )
            })
    });
    let Some((v, rip, cr2, error)) = report else {
        panic!("no `ERROR fault:` line\nlog:\n{}", node.log_text());
    };
    assert_eq!(v, Some(vector), "fault vector\nlog:\n{}", node.log_text());
    for (k, val) in [("rip", rip), ("cr2", cr2), ("error", error)] {
        assert!(
            val.is_some_and(|x| x.starts_with("0x") && u64::from_str_radix(&x[2..], 16).is_ok()),
            "fault report {k}={val:?} is not hex\nlog:\n{}",
            node.log_text()
        );
    }
}

fn announced(node: &Node, want: ExitCode) {
    assert!(
        node.lines()
            .iter()
            .any(|l| l.record().and_then(|r| r.exit()) == Some(want)),
        "no `skiff: exit code={}` line\nlog:\n{}",
        want.name(),
        node.log_text()
    );
}

#[test]
fn page_fault_reports_and_exits_fault() {
    let _g = shared();
    let (exit, node) = faulting("page");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Fault),
        "log:\n{}",
        node.log_text()
    );
    fault_report(&node, "14");
    announced(&node, ExitCode::Fault);
}

#[test]
fn invalid_opcode_reports_and_exits_fault() {
    let _g = shared();
    let (exit, node) = faulting("ud");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Fault),
        "log:\n{}",
        node.log_text()
    );
    fault_report(&node, "6");
    announced(&node, ExitCode::Fault);
}

#[test]
fn panic_exits_panic() {
    let _g = shared();
    let (exit, node) = faulting("panic");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Panic),
        "log:\n{}",
        node.log_text()
    );
    announced(&node, ExitCode::Panic);
}

/// The report's explanation line for a page fault (W^X or a guard page).
fn explained(node: &Node, what: &str) {
    assert!(
        node.lines().iter().any(|l| l
            .record()
            .is_some_and(|r| r.target == "fault" && r.message.starts_with(what))),
        "no `fault: {what}...` line\nlog:\n{}",
        node.log_text()
    );
}

#[test]
fn writing_kernel_text_faults() {
    let _g = shared();
    let (exit, node) = faulting("write-text");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Fault),
        "log:\n{}",
        node.log_text()
    );
    fault_report(&node, "14");
    explained(&node, "W^X: write to read-only page");
}

#[test]
fn executing_heap_data_faults() {
    let _g = shared();
    let (exit, node) = faulting("exec-heap");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Fault),
        "log:\n{}",
        node.log_text()
    );
    fault_report(&node, "14");
    explained(&node, "W^X: instruction fetch from no-execute page");
}

#[test]
fn kernel_stack_overflow_hits_the_guard_page() {
    let _g = shared();
    let (exit, node) = faulting("stack-overflow");
    assert_eq!(
        exit,
        KernelExit::Code(ExitCode::Fault),
        "log:\n{}",
        node.log_text()
    );
    fault_report(&node, "14");
    explained(&node, "stack overflow: guard page");
}
