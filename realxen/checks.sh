# How `cargo xtask realxen` judges an attempt (sourced by dom0-init.sh; cli/tests/realxen_checks.rs
# runs the same functions on captured streams). Needs XENMIG (the xenmig binary), OUT (where
# reports go) and `say` (which may print on stdout: it is sent to stderr here).

# Every guest here has 128 MiB: its pfns lie below 4 GiB (HVM and PVH keep their special
# pages just below it). A stream naming a higher pfn carries garbage, whatever verify says
# (verify cannot know the domain's size).
MAX_GUEST_PFN=0xfffff

# The first sign in a command's output that a process died or its heap broke: a save helper
# killed by a signal (libxl reports it; the device model it kills on purpose is not counted), Rust's allocation abort, glibc's heap checks
# (MALLOC_CHECK_=3 and its own), AddressSanitizer, or xenmig's saver refusing a batch whose
# memory changed under it.
trouble() { # LOGFILE
  grep -m 1 -E 'save/restore helper \[[0-9]+\] died due to fatal signal|memory allocation of [0-9]+ bytes failed|malloc\(\)|free\(\)|double free|corrupted (size|top|double|unsorted|chunk)|munmap_chunk|malloc_consolidate|AddressSanitizer|the record was not written|changed in this process.s memory' "$1"
}

# check_stream FILE TAG CUT: xenmig verify and info of a stream into /out/TAG.*; prints why
# the stream is unacceptable, or nothing. CUT=1: the writer was stopped on purpose (Remus
# primary killed), so a stream that ends inside its last record is expected.
check_stream() {
  $XENMIG verify -v "$1" > "$OUT/$2.verify.txt" 2>&1
  vrc=$?
  $XENMIG info "$1" > "$OUT/$2.info.txt" 2>&1
  # Progress goes to stderr: what this prints on stdout is the verdict.
  say "xenmig verify $2: rc=$vrc, $(head -n 1 "$OUT/$2.verify.txt")" >&2
  hi=$(sed -n 's/^ *pfn range: *0x[0-9a-f]*-\(0x[0-9a-f]*\).*/\1/p' "$OUT/$2.info.txt")
  if [ -n "$hi" ] && [ $((hi)) -gt $((MAX_GUEST_PFN)) ]; then
    echo "the stream names pfn $hi, beyond any the guest has ($MAX_GUEST_PFN)"
    return
  fi
  [ $vrc -eq 0 ] && return
  rule=$(sed -n 's/.*INVALID.*rule `\([^`]*\)`.*/\1/p' "$OUT/$2.verify.txt" | head -n 1)
  if [ "$3" = 1 ] && [ $vrc -eq 1 ] && [ "$rule" = truncated ]; then
    return
  fi
  echo "xenmig verify: $(grep -m 1 -E 'INVALID|rror' "$OUT/$2.verify.txt")"
}

