//! The process's memory: the allocator, and a scavenger thread that gives memory back to the
//! system whenever the process goes quiet after it grew (as Go's background scavenger does for
//! the heap, and Android does for the code of idle apps), so that an idle gateway or connector
//! holds what it uses while idle, not what its start-up or a past burst needed.
//!
//! - mimalloc purges freed memory only when a thread calls into it after its purge delay, and
//!   glibc's malloc (used by librdkafka and SQLite) keeps freed memory in its arenas: the
//!   scavenger forces both to return what is free (`mi_collect(true)`, `malloc_trim(0)`).
//! - Code is spread over the 30 MB of `.text` that `tributary`'s subcommands share (7 MB in a
//!   connector's own program), and the kernel maps executable pages in large chunks (64 KiB
//!   around each fault), so start-up (argument parsing, configuration, connecting,
//!   a Kafka group join) leaves many megabytes of code mapped that an idle process never runs;
//!   the shared libraries' read-only data is touched once too (OpenSSL's tables, read when
//!   librdkafka initialises it, are a megabyte). The scavenger unmaps the pages of the executable
//!   and of shared libraries that are not writable and hold no private copy; what runs next is
//!   mapped again on first use, from the page cache (minor faults).

use std::time::Duration;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often the scavenger looks at the process's CPU time.
const PERIOD: Duration = Duration::from_secs(1);
/// At most this much CPU time in a [`PERIOD`] counts as quiet: 5% of a core, not under load
/// (an idle Kafka client polling its brokers every 10 ms uses 0-20 ms a second).
const QUIET: Duration = Duration::from_millis(50);
/// How much the resident set must have grown past the idle working set for another scavenge.
const GROWTH_KIB: u64 = 1024;

/// Starts the scavenger thread; logs and goes on without it if it cannot start.
pub fn start_scavenger() {
    let started = std::thread::Builder::new()
        .name("scavenger".into())
        .stack_size(64 * 1024)
        .spawn(scavenge);
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the memory scavenger thread; memory freed after bursts stays with the process");
    }
}

/// The scavenger's loop: at a quiet [`PERIOD`], when the resident set has grown
/// [`GROWTH_KIB`] past the idle working set, returns free memory and clean code pages to the
/// system. The idle working set is learnt at the quiet period right after each scavenge (what
/// an idle process maps again at once, e.g. a Kafka client's code that runs every second), so
/// the same pages are not released and mapped again every second.
fn scavenge() {
    // SAFETY: initialises this thread's mimalloc state; no precondition.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_thread_init();
    }
    let mut last = cpu_time();
    let mut idle_set = 0;
    let mut just_scavenged = false;
    loop {
        std::thread::sleep(PERIOD);
        let now = cpu_time();
        let busy = now.saturating_sub(last) > QUIET;
        last = now;
        let Some(resident) = resident_kib() else {
            return;
        };
        match (busy, just_scavenged) {
            (true, _) => just_scavenged = false,
            (false, true) => {
                idle_set = resident;
                just_scavenged = false;
            }
            (false, false) if resident >= idle_set + GROWTH_KIB => {
                if let Err(e) = release_code_pages() {
                    tracing::debug!(error = %e, "cannot release the executable's pages");
                }
                return_free_memory();
                tracing::debug!(
                    before_kib = resident,
                    after_kib = resident_kib().unwrap_or_default(),
                    "memory returned to the system"
                );
                just_scavenged = true;
            }
            (false, false) => {}
        }
    }
}

/// This process's resident set size, in KiB (from `/proc/self/statm`).
fn resident_kib() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4)
}

/// The CPU time the whole process (every thread) has used.
fn cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// Makes mimalloc and glibc's malloc give their free memory back to the system now.
pub fn return_free_memory() {
    // SAFETY: mi_collect may be called from any thread at any time; `true` forces the purge of
    // every arena's free memory (program-wide), not only this thread's.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim is thread-safe and only releases memory glibc holds as free.
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// Unmaps this process's pages of its executable and shared libraries that can be mapped again
/// from their files unchanged (see [`releasable`]); returns how many bytes of mappings were
/// released.
pub fn release_code_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for range in releasable(&smaps, &exe.to_string_lossy()) {
        let Some(start) = std::ptr::NonNull::new(range.start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: `range` is a whole mapping of the executable or a shared library that is not
        // writable and holds no anonymous (private, modified) page: every page of it is the
        // file's content, which the kernel maps again from the page cache on the next access.
        // A running executable cannot be written to (ETXTBSY), and libraries are replaced by
        // new files (a mapping keeps the old one), so that content is what was unmapped.
        #[allow(unsafe_code)]
        let result = unsafe {
            nix::sys::mman::madvise(
                start,
                range.end - range.start,
                nix::sys::mman::MmapAdvise::MADV_DONTNEED,
            )
        };
        if result.is_ok() {
            released += range.end - range.start;
        }
    }
    Ok(released)
}

/// The address ranges in `smaps` (the text of `/proc/self/smaps`) that map the file `exe` or a
/// shared library, are not writable, and hold no anonymous page. Mappings the loader wrote to
/// (relocations, then made read-only) hold anonymous pages and are left alone: their content is
/// not the file's. Other files' mappings are left alone too.
fn releasable(smaps: &str, exe: &str) -> Vec<std::ops::Range<usize>> {
    let mut found = Vec::new();
    // The mapping being read: its range, and whether it is a read-only mapping of `exe` or of
    // a shared library.
    let mut current: Option<(std::ops::Range<usize>, bool)> = None;
    for line in smaps.lines() {
        if let Some((range, candidate)) = mapping_header(line, exe) {
            current = Some((range, candidate));
            continue;
        }
        if let Some(kib) = line.strip_prefix("Anonymous:")
            && let Some((range, true)) = current.take()
            && kib.trim().trim_end_matches("kB").trim() == "0"
        {
            found.push(range);
        }
    }
    found
}

/// A mapping's header line: its range, and whether it maps `exe` or a shared library without
/// write permission.
fn mapping_header(line: &str, exe: &str) -> Option<(std::ops::Range<usize>, bool)> {
    let mut fields = line.split_ascii_whitespace();
    let (start, end) = fields.next()?.split_once('-')?;
    let range = usize::from_str_radix(start, 16).ok()?..usize::from_str_radix(end, 16).ok()?;
    let perms = fields.next()?;
    if perms.len() != 4 {
        return None;
    }
    let path = fields.nth(3).unwrap_or("");
    let code = path == exe || is_shared_library(path);
    let candidate = code && perms.as_bytes()[1] == b'-' && range.start < range.end;
    Some((range, candidate))
}

/// Whether `path` names a shared library (`/usr/lib/x86_64-linux-gnu/libssl.so.3`).
fn is_shared_library(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or("");
    path.starts_with('/')
        && name
            .split_once(".so")
            .is_some_and(|(_, after)| after.is_empty() || after.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0a0000000-55d0a0800000 r--p 00000000 fe:01 42 /opt/tributary
Size:               8192 kB
Rss:                1400 kB
Anonymous:             0 kB
VmFlags: rd mr mw me
55d0a0800000-55d0a2800000 r-xp 00800000 fe:01 42 /opt/tributary
Size:              32768 kB
Anonymous:             0 kB
55d0a2800000-55d0a2a40000 r--p 02800000 fe:01 42 /opt/tributary
Anonymous:          2312 kB
55d0a2a40000-55d0a2a60000 rw-p 02a40000 fe:01 42 /opt/tributary
Anonymous:            64 kB
7f00a0000000-7f00a0100000 r-xp 00000000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             0 kB
7f00a0100000-7f00a0104000 r--p 00100000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:            16 kB
7f00a0104000-7f00a0106000 rw-p 00104000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
Anonymous:             8 kB
7f00a0200000-7f00a0300000 r--p 00000000 fe:01 78 /var/lib/data.bin
Anonymous:             0 kB
7f00b0000000-7f00b0400000 rw-p 00000000 00:00 0
Anonymous:          1024 kB
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Anonymous:           132 kB
";

    #[test]
    fn only_unmodified_read_only_mappings_of_the_executable_and_libraries_are_released() {
        assert_eq!(
            releasable(SMAPS, "/opt/tributary"),
            vec![
                0x55d0a0000000..0x55d0a0800000,
                0x55d0a0800000..0x55d0a2800000,
                0x7f00a0000000..0x7f00a0100000,
            ],
            "relocated read-only mappings, writable ones, other files and anonymous memory stay"
        );
        assert_eq!(
            releasable(SMAPS, "/opt/other"),
            vec![0x7f00a0000000..0x7f00a0100000],
            "another executable's pages stay"
        );
        assert!(releasable("", "/opt/tributary").is_empty());
        assert!(releasable("garbage\nAnonymous: 0 kB\n", "/opt/tributary").is_empty());
    }

    #[test]
    fn shared_libraries_are_told_from_other_files() {
        for library in [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/usr/lib/x86_64-linux-gnu/libcrypto.so.3",
            "/lib64/ld-linux-x86-64.so.2",
            "/usr/lib/libz.so",
            "/usr/lib/x86_64-linux-gnu/libz.so.1.2.13",
        ] {
            assert!(is_shared_library(library), "{library}");
        }
        for other in [
            "",
            "[vdso]",
            "libc.so.6",
            "/var/lib/data.bin",
            "/srv/some.solution",
            "/opt/tributary",
            "/tmp/x.so-old/data",
        ] {
            assert!(!is_shared_library(other), "{other}");
        }
    }

    /// Resident kibibytes of this process's mappings of its executable with permissions `perms`.
    fn executable_rss_kib(perms: &str) -> u64 {
        let exe = std::fs::read_link("/proc/self/exe").expect("exe");
        let exe = exe.to_string_lossy();
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let (mut total, mut counting) = (0, false);
        for line in smaps.lines() {
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            match fields.as_slice() {
                [_, p, _, _, _, path, ..] if mapping_header(line, &exe).is_some() => {
                    counting = *p == perms && *path == exe;
                }
                ["Rss:", kib, ..] if counting => total += kib.parse::<u64>().unwrap_or(0),
                _ => {}
            }
        }
        total
    }

    #[test]
    fn releasing_code_pages_unmaps_code_that_still_runs_afterwards() {
        let before = executable_rss_kib("r-xp");
        assert!(before > 0, "this test's code is resident");
        let released = release_code_pages().expect("released");
        assert!(released > 0, "some mapping was released");
        // Code runs again after the release: this very test, the formatter, the allocator.
        let text = format!("{:?}", (1..50).map(|i| i * 3).collect::<Vec<_>>());
        assert!(text.starts_with("[3, 6, 9"));
        let after = executable_rss_kib("r-xp");
        assert!(
            after < before,
            "resident code went from {before} KiB to {after} KiB"
        );
    }

    #[test]
    fn freed_memory_is_returned_to_the_system() {
        // 64 MiB in small blocks, touched, then freed.
        let blocks: Vec<Vec<u8>> = (0..16_384).map(|i| vec![i as u8; 4096]).collect();
        let full = resident_kib().expect("rss");
        drop(blocks);
        return_free_memory();
        let after = resident_kib().expect("rss");
        assert!(
            after + 32 * 1024 < full,
            "RSS went from {full} KiB to {after} KiB; at least 32 MiB should have gone back"
        );
    }
}
