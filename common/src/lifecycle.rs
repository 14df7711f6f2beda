//! Waiting on guests. libvirt calls return when a request is sent, not when
//! the guest has acted on it; hv-start and hv-stop both poll the domain's
//! state against a per-VM deadline so each VM has its own timer.

use crate::domain::{state_name, state_reason_name};
use crate::error::{Error, Result};
use crate::ffi;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};
use virt::domain::Domain;

/// virDomainState values hv acts on.
pub const RUNNING: u32 = 1;
pub const BLOCKED: u32 = 2;
pub const PAUSED: u32 = 3;
pub const SHUTDOWN: u32 = 4;
pub const SHUTOFF: u32 = 5;
pub const CRASHED: u32 = 6;
pub const PMSUSPENDED: u32 = 7;

/// How often a waiting VM's state is looked at.
pub const POLL: Duration = Duration::from_millis(200);

pub fn state(dom: &Domain) -> Result<(u32, u32)> {
    ffi::state(dom).map_err(|e| Error::libvirt("cannot read the VM's state", &e))
}

/// `state` and `state_reason` fields for a result record.
pub fn state_fields(dom: &Domain) -> Result<Map<String, Value>> {
    Ok(fields_of(state(dom)?))
}

/// `state` and `state_reason` fields for a (state, reason) already read.
pub fn fields_of((s, r): (u32, u32)) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("state".into(), state_name(s).into());
    m.insert("state_reason".into(), state_reason_name(s, r).into());
    m
}

/// Polls until `done(state)` holds or `deadline` passes; `tick` runs on
/// every poll (to resend a request, say). Returns whether it held.
pub fn wait_until(
    dom: &Domain,
    deadline: Instant,
    done: impl Fn(u32) -> bool,
    mut tick: impl FnMut(Duration),
) -> Result<bool> {
    let start = Instant::now();
    loop {
        if done(state(dom)?.0) {
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

pub fn elapsed_ms(since: Instant) -> Value {
    Value::from(since.elapsed().as_millis() as u64)
}
