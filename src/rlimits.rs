//! Resource limits a container inherits. runc's workload inherits runc's
//! own limits (its caller's) for every resource the spec leaves unset; in a
//! microVM the workload would get the guest kernel's defaults instead
//! (RLIMIT_NOFILE 1024 rather than the caller's 4096, say). So the monitor
//! takes its caller's limits when it starts, before it raises any of its
//! own, and adds them to each process it sends to the guest.

use nix::sys::resource::{getrlimit, Resource};
use oci_spec::runtime::{PosixRlimit, PosixRlimitBuilder, PosixRlimitType, Process};

/// Every resource the OCI spec names, with its kernel counterpart.
const RESOURCES: [(PosixRlimitType, Resource); 16] = [
    (PosixRlimitType::RlimitCpu, Resource::RLIMIT_CPU),
    (PosixRlimitType::RlimitFsize, Resource::RLIMIT_FSIZE),
    (PosixRlimitType::RlimitData, Resource::RLIMIT_DATA),
    (PosixRlimitType::RlimitStack, Resource::RLIMIT_STACK),
    (PosixRlimitType::RlimitCore, Resource::RLIMIT_CORE),
    (PosixRlimitType::RlimitRss, Resource::RLIMIT_RSS),
    (PosixRlimitType::RlimitNproc, Resource::RLIMIT_NPROC),
    (PosixRlimitType::RlimitNofile, Resource::RLIMIT_NOFILE),
    (PosixRlimitType::RlimitMemlock, Resource::RLIMIT_MEMLOCK),
    (PosixRlimitType::RlimitAs, Resource::RLIMIT_AS),
    (PosixRlimitType::RlimitLocks, Resource::RLIMIT_LOCKS),
    (
        PosixRlimitType::RlimitSigpending,
        Resource::RLIMIT_SIGPENDING,
    ),
    (PosixRlimitType::RlimitMsgqueue, Resource::RLIMIT_MSGQUEUE),
    (PosixRlimitType::RlimitNice, Resource::RLIMIT_NICE),
    (PosixRlimitType::RlimitRtprio, Resource::RLIMIT_RTPRIO),
    (PosixRlimitType::RlimitRttime, Resource::RLIMIT_RTTIME),
];

/// This process's limits for every resource it can read.
pub fn current() -> Vec<PosixRlimit> {
    RESOURCES
        .iter()
        .filter_map(|(typ, res)| {
            let (soft, hard) = getrlimit(*res).ok()?;
            PosixRlimitBuilder::default()
                .typ(*typ)
                .soft(soft)
                .hard(hard)
                .build()
                .ok()
        })
        .collect()
}

/// Adds each inherited limit whose resource the process does not set.
pub fn fill_unset(process: &mut Process, inherited: &[PosixRlimit]) {
    let mut limits = process.rlimits().clone().unwrap_or_default();
    for l in inherited {
        if !limits.iter().any(|s| s.typ() == l.typ()) {
            limits.push(*l);
        }
    }
    process.set_rlimits(Some(limits));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(typ: PosixRlimitType, soft: u64, hard: u64) -> PosixRlimit {
        PosixRlimitBuilder::default()
            .typ(typ)
            .soft(soft)
            .hard(hard)
            .build()
            .unwrap()
    }

    #[test]
    fn the_spec_wins_and_the_rest_is_inherited() {
        let mut p = Process::default();
        p.set_rlimits(Some(vec![limit(PosixRlimitType::RlimitNofile, 10, 20)]));
        let inherited = vec![
            limit(PosixRlimitType::RlimitNofile, 4096, 8192),
            limit(PosixRlimitType::RlimitCore, 0, u64::MAX),
        ];
        fill_unset(&mut p, &inherited);
        let got = p.rlimits().clone().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].soft(), 10);
        assert_eq!(got[0].hard(), 20);
        assert_eq!(got[1].typ(), PosixRlimitType::RlimitCore);
        assert_eq!(got[1].hard(), u64::MAX);
    }

    #[test]
    fn current_has_this_process_s_nofile() {
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let all = current();
        assert_eq!(all.len(), RESOURCES.len());
        let nofile = all
            .iter()
            .find(|l| l.typ() == PosixRlimitType::RlimitNofile)
            .unwrap();
        assert_eq!((nofile.soft(), nofile.hard()), (soft, hard));
    }
}
