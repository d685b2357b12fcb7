//! The saver never writes a PAGE_DATA record with a pfn the domain does not have (issue 10):
//! a backend whose pages lie beyond the highest pfn it reports makes the save stop with an
//! error naming the pfn and the batch, and what was written before is a valid prefix.
//!
//! Run in release mode: `cargo test -p xenmig-tests --release --test save_integrity`.

mod support;

use support::*;
use xenmig::domain::{BResult, Domain, DomainInfo, GuestType, SaveCallbacks};
use xenmig::libxc;
use xenmig::reader::{Item, Reader, ReaderOptions};
use xenmig::save::{save, SaveError, SaveOptions};
use xenmig::sim::SimDomain;

/// A simulated domain that reports a highest pfn below the pages it has: its dirty bitmap
/// (sized by its p2m) then holds pfns it says do not exist.
struct Shrunk {
    dom: SimDomain,
    max_pfn: u64,
}

impl Domain for Shrunk {
    xenmig::forward_domain!(
        dom:
        p2m_size, pfn_to_gfn, page_types, read_pages, write_pages, populate, set_page_types,
        vcpu_state, set_vcpu_state, online_vcpus, hvm_context, set_hvm_context, hvm_param,
        set_hvm_param, tsc_info, set_tsc_info, shared_info, set_shared_info, cpu_policy,
        set_cpu_policy, enable_logdirty, disable_logdirty, clean_dirty, peek_dirty, pv_p2m,
        mfn_to_pfn, set_address_size, expand_p2m, write_p2m, pin_page_tables,
        p2m_generation, now, reads_whole_batches, memory_limits
    );
    fn info(&mut self) -> BResult<DomainInfo> {
        let mut i = self.dom.info()?;
        i.max_pfn = self.max_pfn;
        Ok(i)
    }
}

/// The toolstack's side: suspends the simulated domain when asked.
struct Suspender;

impl SaveCallbacks<Shrunk> for Suspender {
    fn suspend(&mut self, d: &mut Shrunk) -> bool {
        d.dom.suspend();
        true
    }
}

#[test]
fn a_pfn_beyond_the_domain_stops_the_save_before_its_record() {
    for live in [false, true] {
        let dom = build(GuestType::X86Hvm, 8, 4096, 2, 7);
        let mut dom = Shrunk {
            dom,
            max_pfn: 0x5ff,
        };
        let mut cb = Suspender;
        let mut out = Vec::new();
        let opts = SaveOptions {
            live,
            ..SaveOptions::default()
        };
        let err = match save(&mut dom, &mut cb, &mut out, opts, None) {
            Ok(_) => panic!("live {live}: the save of pfns beyond 0x5ff succeeded"),
            Err(e) => e,
        };
        assert!(matches!(err, SaveError::Invalid(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("pfn 0x600 is beyond the domain's highest pfn 0x5ff"),
            "live {live}: {text}"
        );
        assert!(text.contains("batch 1 "), "live {live}: {text}");
        // What was written is whole records, none with a pfn past 0x5ff: the stream breaks
        // off at a record boundary, before the batch.
        let mut r = Reader::from_slice(&out, ReaderOptions::default());
        let mut pfns = 0;
        loop {
            match r.next_item() {
                Ok(Item::Record(rec)) => {
                    if rec.record_type != libxc::PageData::TYPE {
                        continue;
                    }
                    let ctx = rec.ctx;
                    let page_data = libxc::PageData::decode(rec.body, &ctx)
                        .unwrap_or_else(|e| panic!("live {live}: {e}"));
                    for e in page_data.entries.iter() {
                        assert!(
                            e.pfn() <= 0x5ff,
                            "live {live}: pfn {:#x} was written",
                            e.pfn()
                        );
                        pfns += 1;
                    }
                }
                Ok(Item::Eof { .. }) => panic!("live {live}: the stream has its END"),
                Ok(_) => {}
                Err(e) => {
                    assert_eq!(e.rule, "truncated", "live {live}: {e}");
                    assert_eq!(e.offset, out.len() as u64, "live {live}: {e}");
                    break;
                }
            }
        }
        assert_eq!(pfns, 1024, "live {live}: the first batch went out whole");
    }
}
