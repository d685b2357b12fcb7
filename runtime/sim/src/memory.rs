//! Guest memory of a simulated domain: pages by pfn, stored with their trailing zeros trimmed
//! (a zero page costs nothing, a page with a short pattern costs the pattern), and the page
//! type of each populated pfn. Also the deterministic generator everything seed-derived uses.

use crate::domain::{PageType, PAGE_SIZE};
use std::sync::Arc;

/// splitmix64: small, fast and deterministic; the simulator's only source of "randomness".
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// A generator for one purpose (`tag`) of one seed, independent of the others.
    pub(crate) fn stream(seed: u64, tag: u64) -> Self {
        Rng(mix(seed, tag))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0; n];
        self.fill(&mut v);
        v
    }
}

/// A well-mixed hash of two words.
pub(crate) fn mix(a: u64, b: u64) -> u64 {
    Rng::new(a ^ b.wrapping_mul(0xd6e8_feb8_6659_fd93)).next_u64()
}

/// The initial contents of an ordinary guest page: one page in 16 is zero, one in 16 is full
/// of pseudo-random octets, the rest carry 16 to 256 pseudo-random octets followed by zeros.
pub(crate) fn seeded_page(seed: u64, pfn: u64, out: &mut [u8]) {
    let r = mix(seed, pfn);
    let len = match r % 16 {
        0 => 0,
        1 => PAGE_SIZE,
        _ => 16 * (1 + ((r >> 8) % 16) as usize),
    };
    out.fill(0);
    Rng::new(r).fill(&mut out[..len]);
}

/// Length of `page` without its trailing zeros.
pub(crate) fn trimmed_len(page: &[u8]) -> usize {
    // Whole 64-octet blocks of zeros from the end first: the OR of eight words has no
    // data-dependent branch inside a block, so the compiler turns it into vector code.
    let mut end = page.len();
    while let Some(block) = end.checked_sub(64).and_then(|s| page.get(s..end)) {
        let mut acc = 0u64;
        for w in block.chunks_exact(8) {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            acc |= u64::from_ne_bytes(b);
        }
        if acc != 0 {
            break;
        }
        end -= 64;
    }
    page[..end]
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |i| i + 1)
}

/// The contents every populated page starts with (shared, so populating allocates nothing).
fn empty_page() -> Arc<[u8]> {
    static EMPTY: std::sync::OnceLock<Arc<[u8]>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from(&[][..])).clone()
}

/// Pages and page types by pfn.
#[derive(Debug, Clone, Default)]
pub(crate) struct Memory {
    /// `None`: not populated. `Some`: the contents up to the last non-zero octet. Shared
    /// (`Arc`), so that a copy of the whole memory (a snapshot to digest while the original
    /// goes on) costs a reference count per page; a write replaces the page's buffer.
    pages: Vec<Option<Arc<[u8]>>>,
    types: Vec<PageType>,
    populated: u64,
}

impl Memory {
    /// Number of pfns the store covers (populated or not).
    pub(crate) fn len(&self) -> u64 {
        self.pages.len() as u64
    }

    pub(crate) fn populated_count(&self) -> u64 {
        self.populated
    }

    fn grow(&mut self, pfns: u64) {
        if pfns > self.len() {
            self.pages.resize(pfns as usize, None);
            self.types.resize(pfns as usize, PageType::XTAB);
        }
    }

    /// Makes `pfns` pfns addressable (none populated).
    pub(crate) fn reserve(&mut self, pfns: u64) {
        self.grow(pfns);
    }

    pub(crate) fn is_populated(&self, pfn: u64) -> bool {
        self.pages.get(pfn as usize).is_some_and(|p| p.is_some())
    }

    /// Gives `pfn` a zero page of type NOTAB; no-op when already populated.
    pub(crate) fn populate(&mut self, pfn: u64) {
        self.grow(pfn + 1);
        let i = pfn as usize;
        if self.pages[i].is_none() {
            self.pages[i] = Some(empty_page());
            self.types[i] = PageType::NOTAB;
            self.populated += 1;
        }
    }

    /// The stored (trimmed) contents of a populated pfn.
    pub(crate) fn trimmed(&self, pfn: u64) -> Option<&[u8]> {
        self.pages.get(pfn as usize)?.as_deref()
    }

    /// Copies the page into `out` (4096 octets); false when not populated.
    pub(crate) fn read(&self, pfn: u64, out: &mut [u8]) -> bool {
        match self.trimmed(pfn) {
            Some(t) => {
                out[..t.len()].copy_from_slice(t);
                out[t.len()..].fill(0);
                true
            }
            None => false,
        }
    }

    /// The whole page as an owned buffer.
    pub(crate) fn page(&self, pfn: u64) -> Option<Box<[u8; PAGE_SIZE]>> {
        let mut b = Box::new([0u8; PAGE_SIZE]);
        self.read(pfn, &mut b[..]).then_some(b)
    }

    /// Replaces a populated page's contents; false when not populated.
    pub(crate) fn write(&mut self, pfn: u64, data: &[u8]) -> bool {
        match self.pages.get_mut(pfn as usize) {
            Some(Some(p)) => {
                let new = &data[..trimmed_len(data)];
                match Arc::get_mut(p) {
                    // Same length and not shared with a snapshot: overwrite in place.
                    Some(old) if old.len() == new.len() => old.copy_from_slice(new),
                    _ => *p = Arc::from(new),
                }
                true
            }
            _ => false,
        }
    }

    /// Runs `f` on a copy of the page and stores the result; false when not populated.
    pub(crate) fn modify(&mut self, pfn: u64, f: impl FnOnce(&mut [u8])) -> bool {
        match self.page(pfn) {
            Some(mut b) => {
                f(&mut b[..]);
                self.write(pfn, &b[..])
            }
            None => false,
        }
    }

    /// The type of a pfn: XTAB when not populated.
    pub(crate) fn page_type(&self, pfn: u64) -> PageType {
        if self.is_populated(pfn) {
            self.types[pfn as usize]
        } else {
            PageType::XTAB
        }
    }

    /// Sets the type of a populated pfn; false when not populated.
    pub(crate) fn set_type(&mut self, pfn: u64, t: PageType) -> bool {
        if self.is_populated(pfn) {
            self.types[pfn as usize] = t;
            true
        } else {
            false
        }
    }

    /// Populated pfns in ascending order.
    pub(crate) fn populated_pfns(&self) -> impl Iterator<Item = u64> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter(|(_, p)| p.is_some())
            .map(|(i, _)| i as u64)
    }

    /// Highest populated pfn + 1 (0 when none).
    pub(crate) fn populated_end(&self) -> u64 {
        self.pages
            .iter()
            .rposition(|p| p.is_some())
            .map_or(0, |i| i as u64 + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trimming() {
        let mut p = [0u8; PAGE_SIZE];
        assert_eq!(trimmed_len(&p), 0);
        p[0] = 1;
        assert_eq!(trimmed_len(&p), 1);
        p[17] = 3;
        assert_eq!(trimmed_len(&p), 18);
        p[PAGE_SIZE - 1] = 9;
        assert_eq!(trimmed_len(&p), PAGE_SIZE);
        assert_eq!(trimmed_len(&[0, 0, 5]), 3);
        // Every length and position around the 64-octet blocks.
        for len in [0, 1, 63, 64, 65, 127, 128, 129, 200] {
            for at in 0..len {
                let mut v = vec![0u8; len];
                v[at] = 0x80;
                assert_eq!(trimmed_len(&v), at + 1, "len {len} at {at}");
                if at > 0 {
                    v[at - 1] = 1;
                    assert_eq!(trimmed_len(&v), at + 1, "len {len} at {at}");
                }
            }
            assert_eq!(trimmed_len(&vec![0u8; len]), 0);
        }
    }

    #[test]
    fn pages_round_trip() {
        let mut m = Memory::default();
        m.populate(3);
        assert!(m.is_populated(3) && !m.is_populated(2));
        let mut page = [0u8; PAGE_SIZE];
        seeded_page(7, 3, &mut page);
        page[100] = 0xaa;
        assert!(m.write(3, &page));
        let mut out = [1u8; PAGE_SIZE];
        assert!(m.read(3, &mut out));
        assert_eq!(out, page);
        assert!(!m.write(2, &page));
        assert_eq!(m.page_type(2), PageType::XTAB);
        assert_eq!(m.page_type(3), PageType::NOTAB);
        assert_eq!(m.populated_pfns().collect::<Vec<_>>(), vec![3]);
        // A copy shares the pages; writing to one leaves the other as it was.
        let snap = m.clone();
        let mut other = page;
        other[5] ^= 0xff;
        assert!(m.write(3, &other));
        assert!(snap.read(3, &mut out));
        assert_eq!(out, page);
        assert!(m.read(3, &mut out));
        assert_eq!(out, other);
    }
}
