//! `include/porto.h` is what cbindgen makes of this crate now: a changed signature without a
//! regenerated header fails here. `PORTO_BLESS=1 cargo test -p porto-ffi --test header`
//! rewrites it.

use std::path::Path;

#[test]
fn the_committed_header_is_fresh() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let cfg = cbindgen::Config::from_file(Path::new(dir).join("cbindgen.toml")).expect("cbindgen.toml");
    let mut made = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(cfg)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut made);
    let path = Path::new(dir).join("../include/porto.h");
    if std::env::var_os("PORTO_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
        return;
    }
    let committed = std::fs::read(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/porto.h is stale: regenerate it with `PORTO_BLESS=1 cargo test -p porto-ffi --test header` and commit it"
    );
}

/// Win32 base types and the few `<windows.h>` names an IOCP or RIO server uses beside
/// Winsock's, for `include/porto_winsock.h`.
const WIN32_TYPES: &str = r#"/* Win32 base types, as <windows.h> has them (64-bit). */
typedef uint8_t BYTE;
typedef uint16_t WORD;
typedef uint32_t DWORD, *PDWORD, *LPDWORD;
typedef int32_t BOOL, *LPBOOL;
typedef int32_t INT;
typedef int32_t LONG;
typedef uint32_t UINT, ULONG, *PULONG;
typedef char CHAR, *PCHAR, *LPSTR;
typedef const char *LPCSTR;
typedef uint64_t ULONG_PTR, *PULONG_PTR, DWORD_PTR, *PDWORD_PTR, UINT_PTR;
typedef int64_t LONG_PTR, INT_PTR;
typedef void *PVOID, *LPVOID;
typedef unsigned int GROUP;
typedef struct sockaddr SOCKADDR, *PSOCKADDR, *LPSOCKADDR;
typedef struct sockaddr_in SOCKADDR_IN, *PSOCKADDR_IN;
typedef struct sockaddr_in6 SOCKADDR_IN6, *PSOCKADDR_IN6;
typedef struct sockaddr_storage SOCKADDR_STORAGE;
/* ws2tcpip.h's getaddrinfo is libc's (<netdb.h>): the same contract and sockaddrs. LINGER is
 * Linux's struct linger (int fields, not u_short): SO_LINGER goes to the Linux kernel. */
typedef struct addrinfo ADDRINFOA, *PADDRINFOA;
typedef struct linger LINGER, *PLINGER, *LPLINGER;
#define VOID void
typedef PORTO_OVERLAPPED OVERLAPPED, *LPOVERLAPPED, WSAOVERLAPPED, *LPWSAOVERLAPPED;
typedef PORTO_OVERLAPPED_ENTRY *LPOVERLAPPED_ENTRY;
typedef PORTO_WSABUF *LPWSABUF;
typedef PORTO_HANDLE *PHANDLE;
typedef PORTO_WSAPOLLFD *LPWSAPOLLFD;
/* WSADATA: porto fills nothing in it (porto_WSAStartup takes any pointer). */
typedef struct { WORD wVersion; WORD wHighVersion; char szDescription[257]; char szSystemStatus[129]; } WSADATA, *LPWSADATA;
#ifndef TRUE
#define TRUE 1
#endif
#ifndef FALSE
#define FALSE 0
#endif
#define WINAPI
#define CALLBACK
#define FAR
#define MAKEWORD(a, b) ((WORD)(((BYTE)(a)) | ((WORD)((BYTE)(b))) << 8))
#define LOBYTE(w) ((BYTE)((w) & 0xff))
#define HIBYTE(w) ((BYTE)(((w) >> 8) & 0xff))
#define ERROR_IO_PENDING PORTO_WSA_IO_PENDING
#define GetLastError porto_WSAGetLastError
#define SetLastError porto_WSASetLastError
"#;

/// Names that are not Winsock's: porto's own, or the header's guard.
/// (`porto_FD_SET`/`porto_FD_CLR` are the functions behind the `PORTO_FD_SET`/`PORTO_FD_CLR`
/// macros, which take their Windows names.)
const NOT_RENAMED: &[&str] = &[
    "H",
    "BLESS",
    "WSAEventFd",
    "STARTUP",
    "WSAStartupEx",
    "QOSQueryFlowCounters",
    "QOS_FLOW_COUNTERS",
];

/// `include/porto_winsock.h`: every `porto_X` and `PORTO_X` of `porto.h` under Windows' own
/// name `X`, and the Win32 base types — so a Windows program ports by replacing its Winsock
/// includes with this one header.
fn rename_header(porto_h: &str) -> String {
    // Windows' name -> porto's; a PORTO_ macro or type wins over a porto_ function of the
    // same name (PORTO_FD_SET the macro, porto_FD_SET the function behind it).
    let mut names = std::collections::BTreeMap::<String, String>::new();
    for line in porto_h.lines() {
        let t = line.trim_start();
        if t.starts_with("//") || t.starts_with("/*") || t.starts_with('*') {
            continue;
        }
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let rest = &line[i..];
            let prefix = (rest.starts_with("porto_") || rest.starts_with("PORTO_")).then_some(6);
            let boundary = i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
            match prefix {
                Some(p) if boundary => {
                    let end = rest
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(rest.len());
                    let full = &rest[..end];
                    let short = &full[p..];
                    // RIO's functions exist on Windows only as members of
                    // RIO_EXTENSION_FUNCTION_TABLE (`rio.RIOReceive(...)`), which porto's table
                    // names alike: a macro would rename the member.
                    let table_member = full.starts_with("porto_RIO");
                    if !short.is_empty() && !NOT_RENAMED.contains(&short) && !table_member {
                        let upper = full.starts_with("PORTO_");
                        names
                            .entry(short.to_string())
                            .and_modify(|f| {
                                if upper {
                                    *f = full.to_string();
                                }
                            })
                            .or_insert_with(|| full.to_string());
                    }
                    i += end;
                }
                _ => i += 1,
            }
        }
    }
    let mut out = String::from(
        "/* porto_winsock.h: porto.h under Windows' own names, so a Winsock / IOCP / RIO program\n \
         * ports by replacing #include <winsock2.h>, <mswsock.h>, <ws2tcpip.h> (and the IOCP\n \
         * types of <windows.h>) with #include \"porto_winsock.h\". Every porto_X and PORTO_X of\n \
         * porto.h is X here (a name Linux's headers define too is replaced); the Win32 base\n \
         * types come first. Generated from porto.h by ffi/tests/header.rs\n \
         * (`PORTO_BLESS=1 cargo test -p porto-ffi --test header`); do not edit.\n \
         * Not here: Win32 beyond Winsock and IOCP (threads, CreateThread, critical sections,\n \
         * Sleep, the console), and `struct timeval` for select (Linux's stays: pass a\n \
         * PORTO_TIMEVAL). */\n\
         #ifndef PORTO_WINSOCK_H\n#define PORTO_WINSOCK_H\n\n\
         #include <netdb.h>\n#include <poll.h>\n#include <stdint.h>\n#include <string.h>\n#include <sys/select.h>\n\
         #include <sys/socket.h>\n#include <sys/time.h>\n#include <unistd.h>\n#include \"porto.h\"\n\n",
    );
    out.push_str(WIN32_TYPES);
    out.push_str("\n/* Windows' names. */\n");
    out.push_str("#undef fd_set\n#define fd_set PORTO_FD_SET\n");
    for (short, full) in &names {
        out.push_str(&format!("#undef {short}\n#define {short} {full}\n"));
    }
    out.push_str("\n#endif /* PORTO_WINSOCK_H */\n");
    out
}

#[test]
fn the_rename_header_is_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let porto_h = std::fs::read_to_string(dir.join("../include/porto.h")).unwrap();
    let made = rename_header(&porto_h);
    let path = dir.join("../include/porto_winsock.h");
    if std::env::var_os("PORTO_BLESS").is_some() {
        std::fs::write(&path, &made).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == made,
        "include/porto_winsock.h is stale: regenerate it with `PORTO_BLESS=1 cargo test -p porto-ffi --test header` and commit it"
    );
}
