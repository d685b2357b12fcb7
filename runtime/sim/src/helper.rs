//! The save helper's simulated backend (`XENMIG_SAVE_HELPER_BACKEND=sim:SPEC`): a
//! [`SimDomain`] driven by the helper, with libxl's part (suspend, resume, checkpoint
//! intervals) played locally, and [`run`], the backend arm of the helper for it.

use crate::{SimConfig, SimDomain, Workload, MAX_VCPUS};
use std::fs::File;
use std::io::{Read, Write};
use std::time::Duration;
use xenmig_drivers::domain::{errno, BResult, BackendError, Domain, PAGE_SIZE};
use xenmig_savehelper::{flow, run_restore, run_save, Args, HelperDomain, Outcome, Pipe, SimSpec};

/// What to build for a spec.
pub fn config(spec: &SimSpec) -> SimConfig {
    SimConfig {
        guest: spec.guest,
        width: spec.width,
        memory_pages: spec.memory / PAGE_SIZE as u64,
        vcpus: spec.vcpus,
        seed: spec.seed,
    }
}

/// Runs the save or restore `args` asks for on a simulated domain built from `spec`.
pub fn run<R: Read, W: Write>(
    spec: &SimSpec,
    args: &Args,
    pipe: &mut Pipe<R, W>,
    stream: &File,
    back_channel: Option<&File>,
) -> Outcome {
    match args {
        Args::Save(a) => match SimBackend::for_save(spec) {
            Ok(mut dom) => {
                let mut back = back_channel;
                let back = back.as_mut().map(|f| f as &mut dyn Read);
                run_save(&mut dom, a, pipe, stream, back)
            }
            Err(e) => flow::fail(
                pipe,
                e.errno.unwrap_or(errno::EINVAL),
                &format!("simulated domain: {e}"),
            ),
        },
        Args::Restore(a) => {
            let mut dom = SimBackend::for_restore(spec);
            run_restore(&mut dom, a, pipe, stream)
        }
    }
}

/// A simulated domain driven by the helper, with libxl's part played locally.
#[derive(Debug, Clone)]
pub struct SimBackend {
    /// The domain.
    pub dom: SimDomain,
    no_logdirty: bool,
}

/// How long a simulated guest runs between Remus checkpoints.
pub const SIM_CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);

impl SimBackend {
    /// The running domain to save, built from the spec.
    pub fn for_save(spec: &SimSpec) -> BResult<SimBackend> {
        let mut dom = SimDomain::build(config(spec))?;
        if let Some(b) = spec.bandwidth {
            dom.set_bandwidth(b);
        }
        if spec.dirty_rate > 0 {
            dom.set_workload(Some(Workload {
                rate_pages_per_sec: spec.dirty_rate,
                seed: spec.seed ^ 0x5eed,
            }));
        }
        Ok(SimBackend {
            dom,
            no_logdirty: spec.no_logdirty,
        })
    }

    /// The empty domain libxl would have created for a restore.
    pub fn for_restore(spec: &SimSpec) -> SimBackend {
        SimBackend {
            dom: SimDomain::empty_for_restore(spec.guest, 0, MAX_VCPUS, spec.seed.wrapping_add(1)),
            no_logdirty: spec.no_logdirty,
        }
    }
}

impl HelperDomain for SimBackend {
    fn toolstack_suspended(&mut self) {
        self.dom.suspend();
    }

    fn toolstack_resumed(&mut self) {
        self.dom.resume();
    }

    fn checkpoint_interval(&mut self) {
        self.dom.run_for(SIM_CHECKPOINT_INTERVAL);
    }
}

impl Domain for SimBackend {
    xenmig_drivers::forward_domain!(
        dom:
        info, p2m_size, pfn_to_gfn, page_types, read_pages, write_pages, populate,
        set_page_types, vcpu_state, set_vcpu_state, online_vcpus, hvm_context,
        set_hvm_context, hvm_param, set_hvm_param, tsc_info, set_tsc_info, shared_info,
        set_shared_info, cpu_policy, set_cpu_policy, clean_dirty, peek_dirty, pv_p2m,
        mfn_to_pfn, set_address_size, expand_p2m, write_p2m, pin_page_tables,
        p2m_generation, now, reads_whole_batches, memory_limits, lend_pages, lends_pages, fill_pages
    );
    fn enable_logdirty(&mut self) -> BResult<()> {
        if self.no_logdirty {
            // XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY without shadow paging.
            return Err(
                BackendError::new("enable logdirty", "no shadow paging").errno(errno::EOPNOTSUPP)
            );
        }
        self.dom.enable_logdirty()
    }
    fn disable_logdirty(&mut self) -> BResult<()> {
        if self.no_logdirty {
            // XEN_DOMCTL_SHADOW_OP_OFF on a domain that never had shadow mode.
            return Err(
                BackendError::new("disable logdirty", "shadow mode is off").errno(errno::EINVAL)
            );
        }
        self.dom.disable_logdirty()
    }
}
