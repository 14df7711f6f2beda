//! Waiting on guests. libvirt calls return when a request is sent, not when
//! the guest has acted on it; hv-start and hv-stop both poll the domain's
//! state against a per-VM deadline so each VM has its own timer.

use crate::error::{Error, Result};
use crate::ffi;
use crate::state::{State, VmState};
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// How often a waiting VM's state is looked at.
pub const POLL: Duration = Duration::from_millis(200);

pub fn state(dom: &Domain) -> Result<VmState> {
    let (state, reason) =
        ffi::state(dom).map_err(|e| Error::libvirt("cannot read the VM's state", &e))?;
    Ok(VmState::from_raw(state, reason))
}

/// Polls until `done(state)` holds or `deadline` passes; `tick` runs on
/// every poll (to resend a request, say). Returns whether it held.
pub fn wait_until(
    dom: &Domain,
    deadline: Instant,
    done: impl Fn(State) -> bool,
    mut tick: impl FnMut(Duration),
) -> Result<bool> {
    let start = Instant::now();
    loop {
        if done(state(dom)?.state) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Ok(false);
        }
        std::thread::sleep(POLL.min(deadline.saturating_duration_since(Instant::now())));
        tick(start.elapsed());
    }
}

/// Whether the guest agent answers a `guest-ping` within `wait`.
pub fn agent_answers(dom: &Domain, wait: Duration) -> bool {
    let secs = wait.as_secs().clamp(1, 60) as i32;
    dom.qemu_agent_command(r#"{"execute":"guest-ping"}"#, secs, 0)
        .is_ok()
}

/// What hv-start and hv-stop say of one VM, after `name`, `uuid`,
/// `action` and `ok` (docs/records.md, "Result records").
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transition {
    /// Whether the VM's state changed (false: it already was as asked).
    pub changed: bool,
    /// hv-stop: `graceful`, `forced`, `already_off`, `paused`,
    /// `already_paused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub how: Option<&'static str>,
    /// Present (true) on a dry run, where nothing changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
    /// `state` and `state_reason` once the action is done.
    #[serde(flatten)]
    pub state: VmState,
    pub elapsed_ms: u64,
    /// hv-stop --force-after: why the graceful stop failed before the VM
    /// was forced off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graceful_error: Option<String>,
}

impl Transition {
    pub fn new(changed: bool, dry_run: bool, state: VmState, began: Instant) -> Transition {
        Transition {
            changed,
            how: None,
            dry_run: dry_run.then_some(true),
            state,
            elapsed_ms: began.elapsed().as_millis() as u64,
            graceful_error: None,
        }
    }
}
