//! The spec's seccomp profile, compiled and loaded with libseccomp.

use super::InitError;
use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, InitError> {
    use LinuxSeccompAction::*;
    Ok(match a {
        ScmpActKill | ScmpActKillThread => ScmpAction::KillThread,
        ScmpActKillProcess => ScmpAction::KillProcess,
        ScmpActTrap => ScmpAction::Trap,
        ScmpActErrno => ScmpAction::Errno(errno.unwrap_or(libc::EPERM as u32) as i32),
        ScmpActTrace => ScmpAction::Trace(errno.unwrap_or(libc::EPERM as u32) as u16),
        ScmpActLog => ScmpAction::Log,
        ScmpActAllow => ScmpAction::Allow,
        ScmpActNotify => {
            return Err(InitError(
                "seccomp: SCMP_ACT_NOTIFY is not supported by microrun".into(),
            ))
        }
    })
}

fn compare(op: LinuxSeccompOperator, value: u64, value_two: Option<u64>) -> (ScmpCompareOp, u64) {
    use LinuxSeccompOperator::*;
    match op {
        ScmpCmpNe => (ScmpCompareOp::NotEqual, value),
        ScmpCmpLt => (ScmpCompareOp::Less, value),
        ScmpCmpLe => (ScmpCompareOp::LessOrEqual, value),
        ScmpCmpEq => (ScmpCompareOp::Equal, value),
        ScmpCmpGe => (ScmpCompareOp::GreaterEqual, value),
        ScmpCmpGt => (ScmpCompareOp::Greater, value),
        ScmpCmpMaskedEq => (ScmpCompareOp::MaskedEqual(value), value_two.unwrap_or(0)),
    }
}

/// Builds the filter; names this libseccomp does not know are skipped, as
/// runc skips them.
pub fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext, InitError> {
    let err =
        |what: &str, e: libseccomp::error::SeccompError| InitError(format!("seccomp: {what}: {e}"));
    let default = action(s.default_action(), s.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new_filter(default).map_err(|e| err("new filter", e))?;
    // libseccomp sets no_new_privs on load unless told not to; the spec decides.
    ctx.set_ctl_nnp(false).map_err(|e| err("nnp", e))?;
    for a in s.architectures().iter().flatten() {
        let name = serde_json::to_value(a)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        if let Ok(arch) = name.parse::<ScmpArch>() {
            // Foreign architectures cannot run here; adding them may fail.
            let _ = ctx.add_arch(arch);
        }
    }
    for rule in s.syscalls().iter().flatten() {
        let act = action(rule.action(), rule.errno_ret())?;
        if act == default {
            continue;
        }
        let conds: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let (op, datum) = compare(a.op(), a.value(), a.value_two());
                ScmpArgCompare::new(a.index() as u32, op, datum)
            })
            .collect();
        for name in rule.names() {
            let Ok(sys) = ScmpSyscall::from_name(name) else {
                continue;
            };
            ctx.add_rule_conditional(act, sys, &conds)
                .map_err(|e| err(&format!("rule for {name}"), e))?;
        }
    }
    Ok(ctx)
}

pub fn load(s: &LinuxSeccomp) -> Result<(), InitError> {
    build(s)?
        .load()
        .map_err(|e| InitError(format!("seccomp: load: {e}")))
}
