//! Tests of the simulated domain, including a small reference transfer (save and restore
//! reduced to their effect on the state) that shows the digest survives a correct one.

use super::*;
use crate::x86::{pte_frame, pte_with_frame, PTE_PRESENT};

fn cfg(guest: GuestType, width: u8, seed: u64) -> SimConfig {
    SimConfig {
        guest,
        width,
        memory_pages: 2048,
        vcpus: 3,
        seed,
    }
}

fn all_kinds(seed: u64) -> [SimConfig; 3] {
    [
        cfg(GuestType::X86Pv, 8, seed),
        cfg(GuestType::X86Pv, 4, seed),
        cfg(GuestType::X86Hvm, 8, seed),
    ]
}

#[test]
fn same_seed_same_digest() {
    for c in all_kinds(7) {
        let a = SimDomain::build(c).unwrap();
        let b = SimDomain::build(c).unwrap();
        assert_eq!(a.state_digest(), b.state_digest(), "{c:?}");
    }
}

#[test]
fn different_seeds_differ() {
    for (a, b) in all_kinds(1).into_iter().zip(all_kinds(2)) {
        let a = SimDomain::build(a).unwrap();
        let b = SimDomain::build(b).unwrap();
        assert_ne!(a.state_digest(), b.state_digest());
    }
    let d: Vec<_> = all_kinds(1)
        .into_iter()
        .map(|c| SimDomain::build(c).unwrap().state_digest_hex())
        .collect();
    assert!(d[0] != d[1] && d[1] != d[2] && d[0].len() == 64);
}

#[test]
fn pages_are_not_all_equal() {
    let d = SimDomain::build(cfg(GuestType::X86Hvm, 8, 3)).unwrap();
    let pages: std::collections::HashSet<_> = (0..64).filter_map(|p| d.page(p)).collect();
    assert!(pages.len() > 32);
}

#[test]
fn bad_configs_are_refused() {
    let mut c = cfg(GuestType::X86Pv, 6, 0);
    assert!(SimDomain::build(c).is_err());
    c.width = 8;
    c.memory_pages = 8;
    assert!(SimDomain::build(c).is_err());
    c.memory_pages = 2048;
    c.vcpus = 0;
    assert!(SimDomain::build(c).is_err());
}

#[test]
fn pv_page_tables_are_consistent() {
    for width in [8, 4] {
        for seed in 0..4 {
            let mut d = SimDomain::build(SimConfig {
                memory_pages: 3000 + seed * 700,
                ..cfg(GuestType::X86Pv, width, seed)
            })
            .unwrap();
            d.check_page_tables().unwrap();
            let lay = d.pv_layout().unwrap().clone();
            let l = PvLayout::for_width(width).unwrap();
            // Xen's slots are non-zero on the source.
            let root = d.page(lay.root).unwrap();
            let slots = l.xen_slots(l.levels).unwrap();
            assert!(slots.clone().all(|s| pv::get_pte(&root[..], s) != 0));
            // Every present entry maps back through the m2p.
            let mut present = 0;
            for level in 0..l.levels as usize {
                for &t in &lay.tables[level] {
                    let page = d.page(t).unwrap();
                    for i in 0..512 {
                        let pte = pv::get_pte(&page[..], i);
                        if pte & PTE_PRESENT == 0
                            || (level + 1 == l.levels as usize && slots.contains(&i))
                        {
                            continue;
                        }
                        let pfn = d.mfn_to_pfn(pte_frame(pte)).unwrap();
                        let mut gfn = [None];
                        d.pfn_to_gfn(&[pfn], &mut gfn).unwrap();
                        assert_eq!(gfn[0], Some(pte_frame(pte)));
                        present += 1;
                    }
                }
            }
            assert!(present > (3000 + seed * 700) * 9 / 10, "{present}");
            // Ballooned pfns have no frame; the root is pinned; cr3 names it.
            let mut gfn = vec![None; lay.ballooned.len()];
            d.pfn_to_gfn(&lay.ballooned, &mut gfn).unwrap();
            assert!(gfn.iter().all(|g| g.is_none()));
            let mut t = [PageType::NOTAB];
            d.page_types(&[d.p2m[lay.root as usize]], &mut t).unwrap();
            let root_type = if width == 8 {
                PageType::L4TAB_PINNED
            } else {
                PageType::L3TAB_PINNED
            };
            assert_eq!(t[0], root_type);
            let ctx = d.vcpu_state(0, VcpuState::Basic).unwrap();
            assert_eq!(ctx.len(), l.vcpu_context_size);
            assert_eq!(
                l.cr3_to_frame(l.get(&ctx, l.cr(3)).unwrap()),
                d.p2m[lay.root as usize]
            );
            assert_eq!(
                d.mfn_to_pfn(l.get(&ctx, l.edx).unwrap()),
                Some(lay.start_info)
            );
            // The p2m frames hold the p2m.
            let (p2m, frames) = d.pv_p2m().unwrap();
            assert_eq!(frames, lay.p2m_frames);
            assert_eq!(p2m.len() as u64, d.p2m_size().unwrap());
            let shinfo = d.shared_info().unwrap();
            assert_eq!(l.get(&shinfo, l.arch_max_pfn), Some(p2m.len() as u64));
        }
    }
}

#[test]
fn sources_and_destinations_use_different_frames() {
    let mut src = SimDomain::build(cfg(GuestType::X86Pv, 8, 5)).unwrap();
    let mut dst = SimDomain::empty_for_restore(GuestType::X86Pv, 2047, 3, 5);
    dst.populate(&(0..2048).collect::<Vec<_>>()).unwrap();
    let (a, _) = src.pv_p2m().unwrap();
    let (b, _) = dst.pv_p2m().unwrap();
    let a: std::collections::HashSet<_> = a.into_iter().filter(|&m| m != u64::MAX).collect();
    assert!(b.iter().all(|m| !a.contains(m)));
    assert!(dst.populate(&[5000]).is_err());
}

#[test]
fn workload_dirties_at_its_rate() {
    let mut d = SimDomain::build(cfg(GuestType::X86Hvm, 8, 9)).unwrap();
    // 1000 pages a second over the link; the guest writes 250 pages a second.
    d.set_bandwidth(1000 * PAGE_SIZE as u64);
    d.set_workload(Some(Workload {
        rate_pages_per_sec: 250,
        seed: 4,
    }));
    d.enable_logdirty().unwrap();
    let before = d.state_digest();
    let mut buf = vec![0u8; 100 * PAGE_SIZE];
    let gfns: Vec<u64> = (0..100).collect();
    for _ in 0..10 {
        d.read_pages(&gfns, &mut buf).unwrap();
    }
    assert_eq!(d.now(), Duration::from_secs(1));
    assert_eq!(d.pages_written(), 250);
    let dirty = d.peek_dirty().unwrap();
    assert!(dirty > 200 && dirty <= 250, "{dirty}");
    assert_ne!(d.state_digest(), before);
    // Half a second more.
    d.run_for(Duration::from_millis(500));
    assert_eq!(d.pages_written(), 375);
    // Suspended guests do not write.
    d.suspend();
    assert!(d.info().unwrap().suspended);
    d.read_pages(&gfns, &mut buf).unwrap();
    d.run_for(Duration::from_secs(3));
    assert_eq!(d.pages_written(), 375);
    d.resume();
    d.run_for(Duration::from_millis(4));
    assert_eq!(d.pages_written(), 376);
    // The special pages stay untouched (zero).
    for p in d.hvm_special_pfns() {
        if p != d.hvm_params[&hvm_param::IDENT_PT] >> 12 {
            assert_eq!(d.mem.trimmed(p), Some(&[][..]));
        }
    }
}

#[test]
fn workload_is_deterministic_and_touches_pv_tables() {
    let run = || {
        let mut d = SimDomain::build(cfg(GuestType::X86Pv, 8, 11)).unwrap();
        d.set_workload(Some(Workload {
            rate_pages_per_sec: 2_000_000,
            seed: 1,
        }));
        d.enable_logdirty().unwrap();
        let mut buf = vec![0u8; PAGE_SIZE];
        let gfn = d.p2m[0];
        for _ in 0..200 {
            d.read_pages(&[gfn], &mut buf).unwrap();
        }
        d.check_page_tables().unwrap();
        let mut bm = Bitmap::new(d.p2m_size().unwrap());
        d.clean_dirty(&mut bm, false).unwrap();
        let l1s = &d.pv_layout().unwrap().tables[0];
        assert!(l1s.iter().any(|&p| bm.get(p)), "no page table was dirtied");
        (d.pages_written(), d.state_digest())
    };
    let a = run();
    assert!(a.0 > 300);
    assert_eq!(a, run());
}

#[test]
fn clean_and_peek() {
    let mut d = SimDomain::build(cfg(GuestType::X86Hvm, 8, 2)).unwrap();
    let n = d.p2m_size().unwrap();
    let mut bm = Bitmap::new(n);
    assert!(d.clean_dirty(&mut bm, false).is_err(), "log-dirty is off");
    assert!(d.peek_dirty().is_err());
    d.set_workload(Some(Workload {
        rate_pages_per_sec: 1000,
        seed: 3,
    }));
    d.enable_logdirty().unwrap();
    assert_eq!(d.peek_dirty().unwrap(), 0);
    d.run_for(Duration::from_millis(50));
    let dirty = d.peek_dirty().unwrap();
    assert!(dirty > 0 && dirty <= 50);
    assert_eq!(d.peek_dirty().unwrap(), dirty, "peek does not clear");
    bm.set(0);
    bm.set(n - 1);
    let pre = bm.clone();
    assert_eq!(d.clean_dirty(&mut bm, false).unwrap(), dirty);
    // OR, not replace.
    assert!(pre.iter().all(|b| bm.get(b)));
    assert!(bm.count() >= dirty && bm.count() <= pre.count() + dirty);
    assert_eq!(d.peek_dirty().unwrap(), 0);
    let after = bm.clone();
    assert_eq!(d.clean_dirty(&mut bm, true).unwrap(), 0);
    assert_eq!(bm, after);
    d.disable_logdirty().unwrap();
    assert!(d.peek_dirty().is_err());
}

// ---- A reference transfer: what save and restore do to the state, without a stream. ----

/// Normalises a source page-table page (mfn → pfn, Xen's slots zeroed), as the saver does.
fn normalise(src: &mut SimDomain, level: u8, page: &mut [u8]) {
    let l = PvLayout::for_width(src.width).unwrap();
    let xen = l.xen_slots(level);
    for i in 0..512 {
        let pte = pv::get_pte(page, i);
        let new = if xen.as_ref().is_some_and(|r| r.contains(&i)) {
            0
        } else if pte & PTE_PRESENT != 0 {
            pte_with_frame(pte, src.mfn_to_pfn(pte_frame(pte)).unwrap())
        } else {
            pte
        };
        page[i * 8..i * 8 + 8].copy_from_slice(&new.to_le_bytes());
    }
}

fn dst_mfn(dst: &mut SimDomain, pfn: u64) -> u64 {
    dst.populate(&[pfn]).unwrap();
    let mut g = [None];
    dst.pfn_to_gfn(&[pfn], &mut g).unwrap();
    g[0].unwrap()
}

/// Sends `pfns` from `src` to `dst`: PAGE_DATA and its application.
fn send_pages(src: &mut SimDomain, dst: &mut SimDomain, pfns: impl Iterator<Item = u64>) {
    let mut page = vec![0u8; PAGE_SIZE];
    for pfn in pfns {
        let mut gfn = [None];
        src.pfn_to_gfn(&[pfn], &mut gfn).unwrap();
        let Some(gfn) = gfn[0] else { continue };
        let mut t = [PageType::NOTAB];
        src.page_types(&[gfn], &mut t).unwrap();
        if t[0] == PageType::XTAB {
            continue;
        }
        src.read_pages(&[gfn], &mut page).unwrap();
        let level = pv::table_level(t[0]);
        if let Some(level) = level {
            normalise(src, level, &mut page);
        }
        // Restore side.
        dst.populate(&[pfn]).unwrap();
        dst.set_page_types(&[pfn], &t).unwrap();
        if level.is_some() {
            for i in 0..512 {
                let pte = pv::get_pte(&page, i);
                if pte & PTE_PRESENT != 0 {
                    let m = dst_mfn(dst, pte_frame(pte));
                    page[i * 8..i * 8 + 8].copy_from_slice(&pte_with_frame(pte, m).to_le_bytes());
                }
            }
        }
        let g = match src.guest {
            GuestType::X86Pv => dst_mfn(dst, pfn),
            GuestType::X86Hvm => pfn,
        };
        dst.write_pages(&[g], &page).unwrap();
    }
}

/// Everything after the pages: vcpus, shared info, start_info, p2m, pins, TSC, policies,
/// HVM context and params, as Xen's saver and restorer do it.
fn finish(src: &mut SimDomain, dst: &mut SimDomain) {
    let tsc = src.tsc_info().unwrap();
    dst.set_tsc_info(tsc).unwrap();
    let (c, m) = src.cpu_policy().unwrap();
    dst.set_cpu_policy(&c, &m).unwrap();
    if src.guest == GuestType::X86Hvm {
        for i in hvm_param::saved() {
            let v = src.hvm_param(i).unwrap();
            if v != 0 {
                dst.set_hvm_param(i, v).unwrap();
            }
        }
        for i in [
            hvm_param::STORE_PFN,
            hvm_param::IOREQ_PFN,
            hvm_param::BUFIOREQ_PFN,
            hvm_param::CONSOLE_PFN,
        ] {
            let pfn = dst.hvm_param(i).unwrap();
            dst.write_pages(&[pfn], &[0; PAGE_SIZE]).unwrap();
        }
        let ctx = src.hvm_context().unwrap();
        dst.set_hvm_context(&ctx).unwrap();
        dst.set_hvm_param(hvm_param::STORE_EVTCHN, 3).unwrap();
        dst.set_hvm_param(hvm_param::CONSOLE_EVTCHN, 4).unwrap();
        return;
    }
    let l = PvLayout::for_width(src.width).unwrap();
    // vcpus: mfn → pfn on the source, pfn → mfn on the destination.
    for v in src.online_vcpus().unwrap() {
        let mut ctx = src.vcpu_state(v, VcpuState::Basic).unwrap();
        let mut fields = vec![l.cr(3)];
        if l.width == 8 && l.get(&ctx, l.cr(1)).unwrap() & 1 != 0 {
            fields.push(l.cr(1));
        }
        fields.push(l.gdt_frames);
        if v == 0 {
            fields.push(l.edx);
        }
        for off in fields {
            let raw = l.get(&ctx, off).unwrap();
            let new = if off == l.cr(3) {
                let pfn = src.mfn_to_pfn(l.cr3_to_frame(raw)).unwrap();
                l.frame_to_cr3(dst_mfn(dst, pfn))
            } else if off == l.cr(1) {
                (dst_mfn(dst, src.mfn_to_pfn(raw >> 12).unwrap()) << 12) | 1
            } else {
                dst_mfn(dst, src.mfn_to_pfn(raw).unwrap())
            };
            l.set(&mut ctx, off, new);
        }
        dst.set_vcpu_state(v, VcpuState::Basic, &ctx).unwrap();
        for which in [VcpuState::Extended, VcpuState::Xsave, VcpuState::Msrs] {
            let b = src.vcpu_state(v, which).unwrap();
            dst.set_vcpu_state(v, which, &b).unwrap();
        }
    }
    // start_info: store and console pfn → mfn, the destination's event channels.
    let si = crate::x86::StartInfo::for_width(src.width);
    let si_pfn = dst.start_info_pfn().unwrap();
    let si_mfn = dst_mfn(dst, si_pfn);
    let mut page = vec![0u8; PAGE_SIZE];
    page.copy_from_slice(&dst.page(si_pfn).unwrap()[..]);
    for off in [si.store_mfn, si.console_mfn] {
        let pfn = l.get(&page, off).unwrap();
        let mfn = dst_mfn(dst, pfn);
        l.set(&mut page, off, mfn);
    }
    page[si.store_evtchn..si.store_evtchn + 4].copy_from_slice(&9u32.to_le_bytes());
    page[si.console_evtchn..si.console_evtchn + 4].copy_from_slice(&10u32.to_le_bytes());
    l.set(&mut page, si.shared_info, 0xfeed << 12);
    dst.write_pages(&[si_mfn], &page).unwrap();
    // Shared info, as Xen's restore rewrites it.
    let old = src.shared_info().unwrap();
    let mut new = dst.shared_info().unwrap();
    for (off, len) in [l.shinfo_vcpu_info, l.shinfo_arch] {
        new[off..off + len].copy_from_slice(&old[off..off + len]);
    }
    l.set(&mut new, l.pfn_to_mfn_frame_list_list, 0);
    let (p, n) = l.shinfo_evtchn_pending;
    new[p..p + n].fill(0);
    for i in 0..32 {
        l.set(&mut new, i * l.vcpu_info_size + l.evtchn_pending_sel, 0);
    }
    let (m, n) = l.shinfo_evtchn_mask;
    new[m..m + n].fill(0xff);
    dst.set_shared_info(&new).unwrap();
    // The p2m, then the pins.
    let (_, frames) = src.pv_p2m().unwrap();
    dst.write_p2m(&frames).unwrap();
    let pins: Vec<_> = src
        .mem
        .populated_pfns()
        .filter_map(|p| {
            let t = src.mem.page_type(p);
            (t.0 & 8 != 0 && pv::table_level(t).is_some()).then_some((p, t))
        })
        .collect();
    dst.pin_page_tables(&pins).unwrap();
}

fn restore_target(src: &mut SimDomain) -> SimDomain {
    let vcpus = src.vcpus.len() as u32;
    let mut dst = SimDomain::empty_for_restore(src.guest, 0, vcpus + 2, 99);
    if src.guest == GuestType::X86Pv {
        dst.set_address_size(src.width).unwrap();
        let n = src.p2m_size().unwrap();
        dst.expand_p2m(n - 1).unwrap();
    }
    dst
}

#[test]
fn plain_reference_transfer_keeps_the_digest() {
    for c in all_kinds(21) {
        let mut src = SimDomain::build(c).unwrap();
        src.suspend();
        let mut dst = restore_target(&mut src);
        let n = src.p2m_size().unwrap();
        send_pages(&mut src, &mut dst, 0..n);
        assert_ne!(src.state_digest(), dst.state_digest());
        finish(&mut src, &mut dst);
        assert_eq!(src.state_digest_hex(), dst.state_digest_hex(), "{c:?}");
        dst.check_page_tables().unwrap();
        assert_eq!(dst.pins().len(), src.pins().len());
        // Machine frames really differ.
        if c.guest == GuestType::X86Pv {
            assert_ne!(src.p2m[0], dst.p2m[0]);
            let (_, frames) = dst.pv_p2m().unwrap();
            assert_eq!(frames, src.pv_layout().unwrap().p2m_frames);
        }
        // A different page on the destination shows.
        let pfn = dst.mem.populated_pfns().last().unwrap();
        dst.mem.modify(pfn, |p| p[4095] ^= 1);
        assert_ne!(src.state_digest(), dst.state_digest());
    }
}

#[test]
fn live_reference_transfer_keeps_the_digest() {
    for c in all_kinds(33) {
        let mut src = SimDomain::build(c).unwrap();
        src.set_workload(Some(Workload {
            rate_pages_per_sec: 400_000,
            seed: 5,
        }));
        let mut dst = restore_target(&mut src);
        let n = src.p2m_size().unwrap();
        src.enable_logdirty().unwrap();
        send_pages(&mut src, &mut dst, 0..n);
        let mut sent_again = 0;
        for _ in 0..3 {
            let mut bm = Bitmap::new(n);
            sent_again += src.clean_dirty(&mut bm, false).unwrap();
            send_pages(&mut src, &mut dst, bm.iter());
        }
        src.suspend();
        let mut bm = Bitmap::new(n);
        src.clean_dirty(&mut bm, true).unwrap();
        assert!(
            bm.count() > 0,
            "the guest dirtied pages during the last pass"
        );
        // The final pass changes the destination: without it, it would be stale.
        let stale = dst.state_digest();
        send_pages(&mut src, &mut dst, bm.iter());
        assert_ne!(stale, dst.state_digest());
        finish(&mut src, &mut dst);
        assert!(sent_again > 0);
        assert_eq!(src.state_digest(), dst.state_digest(), "{c:?}");
        dst.check_page_tables().unwrap();
    }
}

#[test]
fn restored_domains_can_be_saved_again() {
    let mut src = SimDomain::build(cfg(GuestType::X86Pv, 8, 41)).unwrap();
    src.suspend();
    let mut mid = restore_target(&mut src);
    let n = src.p2m_size().unwrap();
    send_pages(&mut src, &mut mid, 0..n);
    finish(&mut src, &mut mid);
    // The restored L4s have Xen's slots filled again, as Xen does when it validates them.
    let root = mid.page(src.pv_layout().unwrap().root).unwrap();
    assert_ne!(pv::get_pte(&root[..], 256), 0);
    mid.suspend();
    let mut dst = restore_target(&mut mid);
    send_pages(&mut mid, &mut dst, 0..n);
    finish(&mut mid, &mut dst);
    assert_eq!(src.state_digest(), dst.state_digest());
}

#[test]
fn destinations_check_what_restore_gives_them() {
    let mut src = SimDomain::build(cfg(GuestType::X86Pv, 8, 51)).unwrap();
    let lay = src.pv_layout().unwrap().clone();
    let mut dst = restore_target(&mut src);
    let n = src.p2m_size().unwrap();
    // Pages copied raw (not localised): pinning finds foreign frames.
    let mut page = vec![0u8; PAGE_SIZE];
    for pfn in 0..n {
        let mut g = [None];
        src.pfn_to_gfn(&[pfn], &mut g).unwrap();
        let Some(g) = g[0] else { continue };
        src.read_pages(&[g], &mut page).unwrap();
        let m = dst_mfn(&mut dst, pfn);
        dst.write_pages(&[m], &page).unwrap();
    }
    let err = dst
        .pin_page_tables(&[(lay.root, PageType::L4TAB_PINNED)])
        .unwrap_err();
    assert_eq!(err.errno, Some(errno::EINVAL));
    assert!(err.detail.contains("does not own"), "{err}");
    // Not a pinned type.
    assert!(dst.pin_page_tables(&[(lay.root, PageType::L4TAB)]).is_err());
    assert!(dst.pin_page_tables(&[(lay.root, PageType::NOTAB)]).is_err());
    // A context naming foreign frames.
    let ctx = src.vcpu_state(0, VcpuState::Basic).unwrap();
    assert!(dst.set_vcpu_state(0, VcpuState::Basic, &ctx).is_err());
    assert!(dst.set_vcpu_state(0, VcpuState::Basic, &ctx[1..]).is_err());
    assert!(dst.set_vcpu_state(99, VcpuState::Extended, &[]).is_err());
    // Too few p2m frames.
    assert!(dst.write_p2m(&lay.p2m_frames[1..]).is_err());
    assert!(dst.set_shared_info(&[0; 100]).is_err());
}

#[test]
fn hvm_layout() {
    let mut d = SimDomain::build(cfg(GuestType::X86Hvm, 8, 61)).unwrap();
    let n = d.p2m_size().unwrap();
    assert_eq!(n, 2048 + 0x20 + hvm::MMIO_HOLE_PAGES + hvm::SPECIAL_PAGES);
    let pfns: Vec<u64> = (0..n).collect();
    let mut gfns = vec![None; n as usize];
    d.pfn_to_gfn(&pfns, &mut gfns).unwrap();
    let mut types = vec![PageType::NOTAB; n as usize];
    d.page_types(&pfns, &mut types).unwrap();
    for pfn in 0..n {
        let hole = hvm::VGA_HOLE.contains(&pfn)
            || (n - hvm::SPECIAL_PAGES - hvm::MMIO_HOLE_PAGES..n - hvm::SPECIAL_PAGES)
                .contains(&pfn);
        let i = pfn as usize;
        assert_eq!(gfns[i].is_none(), hole, "pfn {pfn:#x}");
        assert_eq!(types[i] == PageType::XTAB, hole);
        if !hole {
            assert_eq!(gfns[i], Some(pfn));
            assert_eq!(types[i], PageType::NOTAB);
        }
    }
    assert_eq!(
        d.hvm_param(hvm_param::STORE_PFN).unwrap(),
        n - hvm::SPECIAL_PAGES + 1
    );
    assert_eq!(d.hvm_param(200).unwrap(), 0);
    let ctx = d.hvm_context().unwrap();
    assert!((1024..=4096 * 4).contains(&ctx.len()));
    assert!(d.shared_info().is_err());
    assert!(d.pv_p2m().is_err());
    let (cpuid, msrs) = d.cpu_policy().unwrap();
    assert!(!cpuid.is_empty() && cpuid.len() % 24 == 0 && msrs.len() % 16 == 0);
    assert!(d.vcpu_state(0, VcpuState::Basic).unwrap().is_empty());
}
