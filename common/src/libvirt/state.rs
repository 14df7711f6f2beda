//! A VM's state in one vocabulary. libvirt hands out two bare integers
//! (virDomainState and a per-state reason); every command used to compare
//! them its own way, so "running" meant four different things. Here the
//! state is an enum with the names virsh prints, the reason keeps the
//! state it belongs to, and the one question several commands ask — does
//! the VM have a QEMU process? — has one answer, [`State::is_active`].

use serde::Serialize;

/// virDomainState, named as `virsh domstate` names it (snake_case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Running,
    Blocked,
    Paused,
    /// Shutting down: the guest was asked and has not finished.
    Shutdown,
    Shutoff,
    Crashed,
    /// Suspended by the guest's power management (S3).
    Pmsuspended,
    /// libvirt could not tell.
    Nostate,
}

impl crate::Choice for State {
    const ALL: &'static [State] = &State::ALL;

    fn name(self) -> &'static str {
        self.as_str()
    }

    fn help(self) -> Option<&'static str> {
        match self {
            State::Shutdown => Some("Shutting down: the guest was asked and has not finished"),
            State::Pmsuspended => Some("Suspended by the guest's power management (S3)"),
            State::Nostate => Some("libvirt could not tell"),
            _ => None,
        }
    }
}

impl State {
    /// Every state, in the order tables and metrics list them.
    pub const ALL: [State; 8] = [
        State::Running,
        State::Blocked,
        State::Paused,
        State::Shutdown,
        State::Shutoff,
        State::Crashed,
        State::Pmsuspended,
        State::Nostate,
    ];

    /// From libvirt's virDomainState number; one it does not know yet is
    /// `Nostate`.
    pub fn from_raw(raw: u32) -> State {
        use virt::sys;
        match raw {
            sys::VIR_DOMAIN_RUNNING => State::Running,
            sys::VIR_DOMAIN_BLOCKED => State::Blocked,
            sys::VIR_DOMAIN_PAUSED => State::Paused,
            sys::VIR_DOMAIN_SHUTDOWN => State::Shutdown,
            sys::VIR_DOMAIN_SHUTOFF => State::Shutoff,
            sys::VIR_DOMAIN_CRASHED => State::Crashed,
            sys::VIR_DOMAIN_PMSUSPENDED => State::Pmsuspended,
            _ => State::Nostate,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            State::Running => "running",
            State::Blocked => "blocked",
            State::Paused => "paused",
            State::Shutdown => "shutdown",
            State::Shutoff => "shutoff",
            State::Crashed => "crashed",
            State::Pmsuspended => "pmsuspended",
            State::Nostate => "nostate",
        }
    }

    /// Whether the VM has a QEMU process (libvirt's "active"): everything
    /// but shut off. A VM whose state libvirt could not tell is treated as
    /// active, so nothing that needs it stopped goes ahead on a guess.
    pub fn is_active(self) -> bool {
        self != State::Shutoff
    }

    /// Whether the guest's vCPUs can run guest code now (running or
    /// blocked on I/O); paused, suspended and shutting-down VMs cannot.
    pub fn is_running(self) -> bool {
        matches!(self, State::Running | State::Blocked)
    }

    /// The reason libvirt gave for this state, by its number.
    fn reason_name(self, reason: u32) -> &'static str {
        const RUNNING: &[&str] = &[
            "unknown",
            "booted",
            "migrated",
            "restored",
            "from_snapshot",
            "unpaused",
            "migration_canceled",
            "save_canceled",
            "wakeup",
            "crashed",
            "postcopy",
            "postcopy_failed",
        ];
        const PAUSED: &[&str] = &[
            "unknown",
            "user",
            "migration",
            "save",
            "dump",
            "ioerror",
            "watchdog",
            "from_snapshot",
            "shutting_down",
            "snapshot",
            "crashed",
            "starting_up",
            "postcopy",
            "postcopy_failed",
            "api_error",
        ];
        const SHUTDOWN: &[&str] = &["unknown", "user"];
        const SHUTOFF: &[&str] = &[
            "unknown",
            "shutdown",
            "destroyed",
            "crashed",
            "migrated",
            "saved",
            "failed",
            "from_snapshot",
            "daemon",
        ];
        const CRASHED: &[&str] = &["unknown", "panicked"];
        let table: &[&str] = match self {
            State::Running => RUNNING,
            State::Paused => PAUSED,
            State::Shutdown => SHUTDOWN,
            State::Shutoff => SHUTOFF,
            State::Crashed => CRASHED,
            State::Blocked | State::Pmsuspended | State::Nostate => &["unknown"],
        };
        table.get(reason as usize).copied().unwrap_or("unknown")
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state with the reason libvirt gave for it: `(shutoff, crashed)`,
/// `(paused, ioerror)`. Records carry both as `state` and `state_reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmState {
    pub state: State,
    /// virDomain*Reason's number (`virt::sys::VIR_DOMAIN_PAUSED_IOERROR`);
    /// its meaning depends on `state`.
    pub reason: u32,
}

/// Flattened into a record, it is the two fields `state` and `state_reason`.
impl Serialize for VmState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("VmState", 2)?;
        st.serialize_field("state", &self.state)?;
        st.serialize_field("state_reason", self.reason_name())?;
        st.end()
    }
}

impl VmState {
    /// From virDomainGetState's two numbers.
    pub fn from_raw(state: u32, reason: u32) -> VmState {
        VmState {
            state: State::from_raw(state),
            reason,
        }
    }

    /// A state with no reason given (`unknown`).
    pub fn bare(state: State) -> VmState {
        VmState { state, reason: 0 }
    }

    /// The reason's name, as `virsh domstate --reason` prints it in snake_case.
    pub fn reason_name(&self) -> &'static str {
        self.state.reason_name(self.reason)
    }

    /// The guest died: libvirt says crashed, or shut off because it crashed.
    pub fn crashed(&self) -> bool {
        self.state == State::Crashed
            || (self.state == State::Shutoff && self.reason_name() == "crashed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_virsh() {
        assert_eq!(State::from_raw(5), State::Shutoff);
        assert_eq!(State::from_raw(99), State::Nostate);
        assert_eq!(VmState::from_raw(5, 2).reason_name(), "destroyed");
        assert_eq!(VmState::from_raw(3, 5).reason_name(), "ioerror");
        assert_eq!(VmState::from_raw(1, 99).reason_name(), "unknown");
        for state in State::ALL {
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        let fields = serde_json::to_value(VmState::from_raw(5, 3)).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({"state": "shutoff", "state_reason": "crashed"})
        );
        assert!(VmState::from_raw(5, 3).crashed());
    }
}
