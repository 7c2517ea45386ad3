// Windows behaviour that real IOCP and RIO servers rely on, checked from C++ the way those
// servers use it (written from the Win32/Winsock documentation, not from porto's):
//  1. HasOverlappedIoCompleted is false while an overlapped receive is pending and true once
//     its completion is dequeued (Microsoft's samples spin on it before freeing the
//     OVERLAPPED).
//  2. CloseHandle on a completion port ends every GetQueuedCompletionStatus(INFINITE) on it:
//     FALSE, *lpOverlapped NULL, GetLastError() == ERROR_ABANDONED_WAIT_0 — how servers stop
//     their worker threads.
//  3. A program that pins its main thread to one CPU before WSAStartup does not get the
//     library's threads squeezed onto that CPU.
//  4. The calls servers make that porto.h lacked: socket(), WSASetLastError, getpeername,
//     shutdown, WSAGetOverlappedResult / GetOverlappedResult, WSAAccept with a condition
//     function (accept, reject, defer).
#include "porto.h"

#include <arpa/inet.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

static int failures = 0;

#define EXPECT(cond)                                                                 \
    do {                                                                             \
        if (!(cond)) {                                                               \
            std::fprintf(stderr, "%s:%d: failed: %s (last error %d)\n", __FILE__,   \
                         __LINE__, #cond, porto_WSAGetLastError());                  \
            failures++;                                                              \
        }                                                                            \
    } while (0)

// The CPUs a thread of this process named `name` may run on (Cpus_allowed_list), or "".
// An overlapped call's answer: 0 (done at once) or SOCKET_ERROR with WSA_IO_PENDING.
#define SOCKET_ERROR_OR_PENDING(r) ((r) == 0 ? 0 : (porto_WSAGetLastError() == PORTO_WSA_IO_PENDING ? (r) : 12345))

static int conditions = 0;
// WSAAccept's condition: reject the first connection, defer the second once, accept the rest.
static int CALLBACK_condition(PORTO_WSABUF *caller, PORTO_WSABUF *, void *, void *, PORTO_WSABUF *callee,
                              PORTO_WSABUF *, uint32_t *, uintptr_t data) {
    if (caller == nullptr || callee == nullptr || caller->len < sizeof(sockaddr_in) || data != 42)
        return PORTO_CF_REJECT + 100; // makes the check below fail
    conditions++;
    if (conditions == 1)
        return PORTO_CF_REJECT;
    if (conditions == 2)
        return PORTO_CF_DEFER;
    return PORTO_CF_ACCEPT;
}

static std::string allowed_cpus_of(const char *name) {
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return "";
    std::string found;
    while (dirent *e = readdir(d)) {
        if (e->d_name[0] == '.')
            continue;
        std::string base = std::string("/proc/self/task/") + e->d_name;
        std::ifstream comm(base + "/comm");
        std::string n;
        std::getline(comm, n);
        if (n != name)
            continue;
        std::ifstream status(base + "/status");
        std::string line;
        while (std::getline(status, line))
            if (line.rfind("Cpus_allowed_list:", 0) == 0)
                found = line.substr(line.find_first_not_of(" \t", 18));
    }
    closedir(d);
    return found;
}

int main() {
    alarm(60); // a hang is a failure, not a stuck CI job

    // 0. A completion port and an event are kernel32's on Windows (WSACreateEvent is
    // CreateEvent; Microsoft's iocpserverex creates its cleanup event before WSAStartup): they
    // work before WSAStartup and outlive WSACleanup; a socket before WSAStartup is
    // WSANOTINITIALISED.
    PORTO_HANDLE early = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 1);
    EXPECT(early != nullptr);
    EXPECT(porto_PostQueuedCompletionStatus(early, 3, 5, nullptr) == 1);
    PORTO_WSAEVENT early_event = porto_WSACreateEvent();
    EXPECT(early_event != PORTO_WSA_INVALID_EVENT);
    EXPECT(porto_WSASetEvent(early_event) == 1);
    EXPECT(porto_socket(AF_INET, SOCK_DGRAM, 0) == PORTO_INVALID_SOCKET);
    EXPECT(porto_WSAGetLastError() == PORTO_WSANOTINITIALISED);

    // 3. Pin the main thread to CPU 0 first, as a polled RIO server does.
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    EXPECT(sched_setaffinity(0, sizeof one, &one) == 0);
    EXPECT(porto_WSAStartup(0x0202, nullptr) == 0);
    std::ifstream online_file("/sys/devices/system/cpu/online");
    std::string online;
    std::getline(online_file, online);
    std::string shard = allowed_cpus_of("porto-shard-0");
    EXPECT(!shard.empty());
    if (shard != online) {
        std::fprintf(stderr, "shard thread on CPUs %s, online %s\n", shard.c_str(), online.c_str());
        failures++;
    }

    // 1. HasOverlappedIoCompleted around a pending receive.
    PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 0);
    EXPECT(iocp != 0);
    PORTO_SOCKET s = porto_WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, nullptr, 0, PORTO_WSA_FLAG_OVERLAPPED);
    sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT(porto_bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);
    int alen = sizeof a;
    EXPECT(porto_getsockname(s, reinterpret_cast<sockaddr *>(&a), &alen) == 0);
    EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)s, iocp, 7, 0) == iocp);

    char data[64];
    PORTO_WSABUF wb;
    wb.len = sizeof data;
    wb.buf = data; // CHAR *, as Windows declares it
    PORTO_OVERLAPPED ov;
    std::memset(&ov, 0, sizeof ov);
    uint32_t flags = 0;
    sockaddr_in from;
    int fromlen = sizeof from;
    EXPECT(porto_WSARecvFrom(s, &wb, 1, nullptr, &flags, reinterpret_cast<sockaddr *>(&from), &fromlen, &ov,
                             nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
    EXPECT(!PORTO_HasOverlappedIoCompleted(&ov));
    uint32_t got_bytes = 7, got_flags = 7;
    EXPECT(porto_WSAGetOverlappedResult(s, &ov, &got_bytes, 0, &got_flags) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_INCOMPLETE);
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    EXPECT(sendto(c, "hello", 5, 0, reinterpret_cast<sockaddr *>(&a), sizeof a) == 5);
    uint32_t bytes = 0;
    uint64_t key = 0;
    PORTO_OVERLAPPED *got = nullptr;
    EXPECT(porto_GetQueuedCompletionStatus(iocp, &bytes, &key, &got, 5000) == 1);
    EXPECT(got == &ov && key == 7 && bytes == 5);
    EXPECT(PORTO_HasOverlappedIoCompleted(&ov));
    EXPECT(ov.Internal == 0 && ov.InternalHigh == 5);
    EXPECT(porto_WSAGetOverlappedResult(s, &ov, &got_bytes, 1, &got_flags) == 1);
    EXPECT(got_bytes == 5 && got_flags == 0);
    // GetOverlappedResult(wait) returns once another thread dequeues the completion.
    {
        PORTO_OVERLAPPED ov2;
        std::memset(&ov2, 0, sizeof ov2);
        EXPECT(porto_WSARecvFrom(s, &wb, 1, nullptr, &flags, nullptr, nullptr, &ov2, nullptr) == PORTO_SOCKET_ERROR);
        std::thread dq([iocp] {
            uint32_t b2 = 0;
            uint64_t k2 = 0;
            PORTO_OVERLAPPED *o2 = nullptr;
            porto_GetQueuedCompletionStatus(iocp, &b2, &k2, &o2, 5000);
        });
        EXPECT(sendto(c, "again!", 6, 0, reinterpret_cast<sockaddr *>(&a), sizeof a) == 6);
        uint32_t b3 = 0;
        EXPECT(porto_GetOverlappedResult((PORTO_HANDLE)s, &ov2, &b3, 1) == 1);
        EXPECT(b3 == 6);
        dq.join();
    }
    // No OVERLAPPED: WSARecvFrom and WSASendTo are the blocking calls, as on Windows.
    {
        EXPECT(sendto(c, "blocking", 8, 0, reinterpret_cast<sockaddr *>(&a), sizeof a) == 8);
        char p1[3], p2[16];
        PORTO_WSABUF two[2] = {{sizeof p1, p1}, {sizeof p2, p2}};
        uint32_t got_n = 0, fl = 0;
        sockaddr_in src;
        int srclen = sizeof src;
        EXPECT(porto_WSARecvFrom(s, two, 2, &got_n, &fl, reinterpret_cast<sockaddr *>(&src), &srclen, nullptr, nullptr) ==
               0);
        EXPECT(got_n == 8 && std::memcmp(p1, "blo", 3) == 0 && std::memcmp(p2, "cking", 5) == 0);
        sockaddr_in cme;
        socklen_t cmelen = sizeof cme;
        getsockname(c, reinterpret_cast<sockaddr *>(&cme), &cmelen);
        EXPECT(src.sin_port == cme.sin_port);
        PORTO_WSABUF out = {5, const_cast<char *>("reply")};
        uint32_t sent_n = 0;
        EXPECT(porto_WSASendTo(s, &out, 1, &sent_n, 0, reinterpret_cast<sockaddr *>(&cme), sizeof cme, nullptr, nullptr) ==
               0);
        EXPECT(sent_n == 5);
        char back[8];
        EXPECT(recv(c, back, sizeof back, 0) == 5);
    }
    close(c);
    // Not connected: getpeername and shutdown say so.
    sockaddr_in peer;
    int plen = sizeof peer;
    EXPECT(porto_getpeername(s, reinterpret_cast<sockaddr *>(&peer), &plen) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
    porto_WSASetLastError(12345);
    EXPECT(porto_WSAGetLastError() == 12345);
    EXPECT(porto_closesocket(s) == 0);

    // 2. CloseHandle ends every wait on the port.
    std::atomic<int> abandoned{0};
    std::vector<std::thread> workers;
    for (int i = 0; i < 3; i++) {
        workers.emplace_back([iocp, &abandoned] {
            uint32_t b = 0;
            uint64_t k = 0;
            PORTO_OVERLAPPED *o = reinterpret_cast<PORTO_OVERLAPPED *>(1);
            if (porto_GetQueuedCompletionStatus(iocp, &b, &k, &o, PORTO_INFINITE) == 0 && o == nullptr &&
                porto_WSAGetLastError() == PORTO_ERROR_ABANDONED_WAIT_0)
                abandoned++;
        });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    auto closed_at = std::chrono::steady_clock::now();
    EXPECT(porto_CloseHandle(iocp) == 1);
    for (auto &w : workers)
        w.join();
    auto waited = std::chrono::steady_clock::now() - closed_at;
    EXPECT(abandoned == 3);
    EXPECT(waited < std::chrono::seconds(2));
    // The handle is gone: a new wait on it is an invalid handle, not a hang.
    uint32_t b = 0;
    uint64_t k = 0;
    PORTO_OVERLAPPED *o = nullptr;
    EXPECT(porto_GetQueuedCompletionStatus(iocp, &b, &k, &o, PORTO_INFINITE) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);

    // 4. socket(), WSAAccept with a condition, getpeername, shutdown on TCP.
    {
        PORTO_SOCKET l = porto_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        EXPECT(l != PORTO_INVALID_SOCKET);
        sockaddr_in la;
        std::memset(&la, 0, sizeof la);
        la.sin_family = AF_INET;
        la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        int lal = sizeof la;
        EXPECT(porto_getsockname(l, reinterpret_cast<sockaddr *>(&la), &lal) == 0);
        EXPECT(porto_listen(l, 8) == 0);
        int cs[3];
        for (int &x : cs) {
            x = socket(AF_INET, SOCK_STREAM, 0);
            EXPECT(connect(x, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        }
        // The first is rejected (closed), the second deferred then accepted on the next call.
        EXPECT(porto_WSAAccept(l, nullptr, nullptr, CALLBACK_condition, 42) == PORTO_INVALID_SOCKET);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAECONNREFUSED);
        EXPECT(porto_WSAAccept(l, nullptr, nullptr, CALLBACK_condition, 42) == PORTO_INVALID_SOCKET);
        EXPECT(porto_WSAGetLastError() == PORTO_WSATRY_AGAIN);
        sockaddr_in from2;
        int from2len = sizeof from2;
        PORTO_SOCKET acc = porto_WSAAccept(l, reinterpret_cast<sockaddr *>(&from2), &from2len, CALLBACK_condition, 42);
        EXPECT(acc != PORTO_INVALID_SOCKET);
        EXPECT(conditions == 3); // the deferred one was offered again
        sockaddr_in mine;
        socklen_t minelen = sizeof mine;
        getsockname(cs[1], reinterpret_cast<sockaddr *>(&mine), &minelen);
        EXPECT(from2.sin_port == mine.sin_port); // the deferred connection, not the third
        sockaddr_in pa;
        int pal = sizeof pa;
        EXPECT(porto_getpeername(acc, reinterpret_cast<sockaddr *>(&pa), &pal) == 0);
        EXPECT(pa.sin_port == mine.sin_port && pal == (int)sizeof(sockaddr_in));
        char one = 0;
        EXPECT(recv(cs[0], &one, 1, 0) <= 0); // the rejected one was closed
        EXPECT(porto_shutdown(acc, 7) == PORTO_SOCKET_ERROR && porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_shutdown(acc, PORTO_SD_SEND) == 0);
        EXPECT(recv(cs[1], &one, 1, 0) == 0); // EOF after SD_SEND
        PORTO_SOCKET third = porto_WSAAccept(l, nullptr, nullptr, nullptr, 0);
        EXPECT(third != PORTO_INVALID_SOCKET);
        // 5. A WSARecv larger than a pool frame takes all that is waiting, across its WSABUFs,
        // in one completion (it used to end at 2048 bytes, one frame: an echo server then
        // answered in two sends and met Nagle with delayed ACKs, 40 ms a round trip).
        {
            PORTO_HANDLE port = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 0);
            EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)third, port, 9, 0) == port);
            static char msg[6000], got[8192];
            for (size_t i = 0; i < sizeof msg; i++)
                msg[i] = (char)(i * 13 + 1);
            EXPECT(send(cs[2], msg, sizeof msg, 0) == (ssize_t)sizeof msg);
            std::this_thread::sleep_for(std::chrono::milliseconds(100)); // all of it is waiting
            PORTO_WSABUF two[2] = {{5000, got}, {3192, got + 5000}};
            PORTO_OVERLAPPED rov;
            std::memset(&rov, 0, sizeof rov);
            uint32_t rflags = 0;
            int r = porto_WSARecv(third, two, 2, nullptr, &rflags, &rov, nullptr);
            EXPECT(r == 0 || porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
            uint32_t n = 0;
            uint64_t k = 0;
            PORTO_OVERLAPPED *o = nullptr;
            EXPECT(porto_GetQueuedCompletionStatus(port, &n, &k, &o, 5000) == 1);
            EXPECT(o == &rov && k == 9);
            if (n != sizeof msg)
                std::fprintf(stderr, "one WSARecv of 8192 took %u of %zu bytes waiting\n", n, sizeof msg);
            EXPECT(n == sizeof msg);
            EXPECT(std::memcmp(got, msg, sizeof msg) == 0);
            // The zero-byte WSARecv (NULL buffer, length 0): completes with 0 bytes once data
            // is waiting, taking none; the next WSARecv gets the data.
            PORTO_WSABUF zero = {0, nullptr};
            std::memset(&rov, 0, sizeof rov);
            r = porto_WSARecv(third, &zero, 1, nullptr, &rflags, &rov, nullptr);
            EXPECT(r == SOCKET_ERROR_OR_PENDING(r));
            EXPECT(porto_GetQueuedCompletionStatus(port, &n, &k, &o, 100) == 0); // nothing yet
            EXPECT(porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT);
            EXPECT(send(cs[2], "later", 5, 0) == 5);
            EXPECT(porto_GetQueuedCompletionStatus(port, &n, &k, &o, 5000) == 1);
            EXPECT(o == &rov && n == 0);
            PORTO_WSABUF one = {sizeof got, got};
            std::memset(&rov, 0, sizeof rov);
            r = porto_WSARecv(third, &one, 1, nullptr, &rflags, &rov, nullptr);
            EXPECT(porto_GetQueuedCompletionStatus(port, &n, &k, &o, 5000) == 1);
            EXPECT(n == 5 && std::memcmp(got, "later", 5) == 0);
            EXPECT(porto_CloseHandle(port) == 1);
        }
        for (int x : cs)
            close(x);
        EXPECT(porto_closesocket(acc) == 0 && porto_closesocket(third) == 0 && porto_closesocket(l) == 0);
    }

    // 7. connect() on a UDP socket: a default peer for WSASend and RIOSend (it was
    // WSAEOPNOTSUPP); RIOSend on an unconnected UDP socket fails WSAENOTCONN at the call (it
    // used to fail later, in the completion queue, with WSASYSCALLFAILURE).
    {
        int peer_fd = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in pa;
        std::memset(&pa, 0, sizeof pa);
        pa.sin_family = AF_INET;
        pa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(bind(peer_fd, reinterpret_cast<sockaddr *>(&pa), sizeof pa) == 0);
        socklen_t palen = sizeof pa;
        getsockname(peer_fd, reinterpret_cast<sockaddr *>(&pa), &palen);
        timeval tv = {5, 0};
        setsockopt(peer_fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

        PORTO_SOCKET u = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
        PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
        PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
        uint32_t gotb = 0;
        EXPECT(porto_WSAIoctl(u, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, sizeof rio,
                              &gotb, nullptr, nullptr) == 0);
        static char rmem[256];
        std::memcpy(rmem, "rio to the peer", 15);
        PORTO_RIO_BUFFERID rb = rio.RIORegisterBuffer(rmem, sizeof rmem);
        PORTO_RIO_CQ rcq = rio.RIOCreateCompletionQueue(8, nullptr);
        PORTO_RIO_RQ rq = rio.RIOCreateRequestQueue(u, 1, 1, 2, 1, rcq, rcq, nullptr);
        EXPECT(rb != PORTO_RIO_INVALID_BUFFERID && rcq != PORTO_RIO_INVALID_CQ && rq != PORTO_RIO_INVALID_RQ);
        PORTO_RIO_BUF out = {rb, 0, 15};
        EXPECT(rio.RIOSend(rq, &out, 1, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_connect(u, reinterpret_cast<sockaddr *>(&pa), sizeof pa) == 0);
        sockaddr_in gp;
        int gplen = sizeof gp;
        EXPECT(porto_getpeername(u, reinterpret_cast<sockaddr *>(&gp), &gplen) == 0 && gp.sin_port == pa.sin_port);
        EXPECT(rio.RIOSend(rq, &out, 1, 0, (void *)7) == 1);
        char got_rio[64];
        EXPECT(recv(peer_fd, got_rio, sizeof got_rio, 0) == 15 && std::memcmp(got_rio, "rio to the peer", 15) == 0);
        PORTO_RIORESULT res[2];
        uint32_t nres = 0;
        for (int i = 0; i < 500 && nres == 0; i++) {
            nres = rio.RIODequeueCompletion(rcq, res, 2);
            if (nres == 0)
                std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        EXPECT(nres == 1 && res[0].Status == 0 && res[0].BytesTransferred == 15);
        // WSASend (overlapped) and send() on a connected UDP socket go to the peer too.
        PORTO_SOCKET u2 = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
        PORTO_HANDLE up = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)u2, up, 1, 0) == up);
        PORTO_WSABUF nowhere = {1, const_cast<char *>("x")};
        PORTO_OVERLAPPED nov;
        std::memset(&nov, 0, sizeof nov);
        EXPECT(porto_WSASend(u2, &nowhere, 1, nullptr, 0, &nov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_connect(u2, reinterpret_cast<sockaddr *>(&pa), sizeof pa) == 0);
        PORTO_WSABUF wsb = {5, const_cast<char *>("wsa!!")};
        PORTO_OVERLAPPED sov;
        std::memset(&sov, 0, sizeof sov);
        int sr = porto_WSASend(u2, &wsb, 1, nullptr, 0, &sov, nullptr);
        EXPECT(sr == 0 || porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        EXPECT(recv(peer_fd, got_rio, sizeof got_rio, 0) == 5);
        EXPECT(porto_send(u2, "send", 4, 0) == 4);
        EXPECT(recv(peer_fd, got_rio, sizeof got_rio, 0) == 4);
        EXPECT(porto_closesocket(u) == 0 && porto_closesocket(u2) == 0);
        rio.RIOCloseCompletionQueue(rcq);
        rio.RIODeregisterBuffer(rb);
        EXPECT(porto_CloseHandle(up) == 1);
        close(peer_fd);
    }

    // 8. setsockopt/getsockopt before bind, as Windows servers call them right after
    // WSASocket (SO_REUSEADDR, buffer sizes): kept, readable back, applied when the kernel
    // socket is made (it was WSAEINVAL).
    {
        PORTO_SOCKET u = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
        int big = 1 << 20, got_v = 0;
        int glen = sizeof got_v;
        EXPECT(porto_getsockopt(u, SOL_SOCKET, SO_RCVBUF, &got_v, &glen) == PORTO_SOCKET_ERROR); // nothing set yet
        EXPECT(porto_setsockopt(u, SOL_SOCKET, SO_RCVBUF, &big, sizeof big) == 0);
        glen = sizeof got_v;
        EXPECT(porto_getsockopt(u, SOL_SOCKET, SO_RCVBUF, &got_v, &glen) == 0 && got_v == big);
        EXPECT(porto_setsockopt(u, SOL_SOCKET, 9999, &big, sizeof big) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOPROTOOPT);
        sockaddr_in ua;
        std::memset(&ua, 0, sizeof ua);
        ua.sin_family = AF_INET;
        ua.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_bind(u, reinterpret_cast<sockaddr *>(&ua), sizeof ua) == 0);
        glen = sizeof got_v;
        EXPECT(porto_getsockopt(u, SOL_SOCKET, SO_RCVBUF, &got_v, &glen) == 0);
        EXPECT(got_v >= big); // the kernel's value now (Linux doubles it)
        EXPECT(porto_closesocket(u) == 0);

        PORTO_SOCKET l = porto_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        int on = 1;
        EXPECT(porto_setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on) == 0);
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&ua), sizeof ua) == 0);
        int la_len = sizeof ua;
        EXPECT(porto_getsockname(l, reinterpret_cast<sockaddr *>(&ua), &la_len) == 0);
        EXPECT(porto_listen(l, 4) == 0);
        PORTO_SOCKET t = porto_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        int sndbuf = 1 << 18;
        EXPECT(porto_setsockopt(t, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf) == 0);
        EXPECT(porto_connect(t, reinterpret_cast<sockaddr *>(&ua), sizeof ua) == 0);
        glen = sizeof got_v;
        EXPECT(porto_getsockopt(t, SOL_SOCKET, SO_SNDBUF, &got_v, &glen) == 0 && got_v >= sndbuf);
        EXPECT(porto_closesocket(t) == 0 && porto_closesocket(l) == 0);
    }

    // 9. Microsoft's iocpserverex at shutdown: its worker threads are gone (nobody dequeues
    // any more), it closes the listener and spins on HasOverlappedIoCompleted over the
    // listener's pending AcceptEx before freeing it. Windows writes a failed operation's
    // OVERLAPPED when it ends, not when it is dequeued; porto wrote it at dequeue and the
    // spin never ended. A later dequeue hands the completion out without writing the
    // OVERLAPPED again (the program has freed it).
    {
        PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 0);
        PORTO_SOCKET l = porto_WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, PORTO_WSA_FLAG_OVERLAPPED);
        sockaddr_in la;
        std::memset(&la, 0, sizeof la);
        la.sin_family = AF_INET;
        la.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        EXPECT(porto_listen(l, 4) == 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)l, iocp, 7, 0) == iocp);
        PORTO_SOCKET acc = porto_WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, PORTO_WSA_FLAG_OVERLAPPED);
        PORTO_OVERLAPPED *ov = new PORTO_OVERLAPPED();
        char abuf[2 * (sizeof(sockaddr_in6) + 16)];
        uint32_t got_b = 0;
        EXPECT(porto_AcceptEx(l, acc, abuf, 0, sizeof(sockaddr_in6) + 16, sizeof(sockaddr_in6) + 16, &got_b, ov) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        EXPECT(!PORTO_HasOverlappedIoCompleted(ov));
        EXPECT(porto_closesocket(l) == 0);
        int spins = 0;
        while (!PORTO_HasOverlappedIoCompleted(ov) && spins < 5000) { // ≤ 5 s, then a failure
            usleep(1000);
            spins++;
        }
        EXPECT(PORTO_HasOverlappedIoCompleted(ov));
        EXPECT(ov->Internal == PORTO_WSA_OPERATION_ABORTED);
        uint32_t ob = 1;
        EXPECT(porto_WSAGetOverlappedResult(acc, ov, &ob, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_OPERATION_ABORTED && ob == 0);
        // Freed as the sample frees it; then the completion is still there to dequeue once,
        // and dequeuing it writes nothing into the freed OVERLAPPED (ASan would say).
        uintptr_t was = reinterpret_cast<uintptr_t>(ov);
        delete ov;
        uint32_t qb = 1;
        uint64_t qk = 0;
        PORTO_OVERLAPPED *qo = nullptr;
        EXPECT(porto_GetQueuedCompletionStatus(iocp, &qb, &qk, &qo, 2000) == 0);
        EXPECT(reinterpret_cast<uintptr_t>(qo) == was && qk == 7 && qb == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_OPERATION_ABORTED);
        EXPECT(porto_GetQueuedCompletionStatus(iocp, &qb, &qk, &qo, 0) == 0 && qo == nullptr);
        EXPECT(porto_closesocket(acc) == 0);
        EXPECT(porto_CloseHandle(iocp) == 1);
    }

    // 10. Misuse answered with the codes Windows documents (the table in
    // docs/winsock-mapping.md); CreateIoCompletionPort is kernel32's and answers with Win32
    // codes (it gave Winsock's).
    {
        PORTO_HANDLE mp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 1);
        PORTO_HANDLE mp2 = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 1);
        PORTO_SOCKET u = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)u, mp, 1, 0) == mp);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)u, mp, 1, 0) == nullptr);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_PARAMETER);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)u, mp2, 1, 0) == nullptr);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_PARAMETER);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)99999, mp, 1, 0) == nullptr);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);
        EXPECT(porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, mp, 0, 1) == nullptr);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_PARAMETER);
        EXPECT(porto_CloseHandle((PORTO_HANDLE)(uintptr_t)77777) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);
        EXPECT(porto_PostQueuedCompletionStatus((PORTO_HANDLE)(uintptr_t)77777, 0, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);
        sockaddr_in ma;
        std::memset(&ma, 0, sizeof ma);
        ma.sin_family = AF_INET;
        ma.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_bind(99999, reinterpret_cast<sockaddr *>(&ma), sizeof ma) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTSOCK);
        PORTO_SOCKET b2 = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
        EXPECT(porto_bind(b2, reinterpret_cast<sockaddr *>(&ma), sizeof ma) == 0);
        EXPECT(porto_bind(b2, reinterpret_cast<sockaddr *>(&ma), sizeof ma) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // bound already
        EXPECT(porto_closesocket(b2) == 0);
        // Associated before bind (Windows takes either order; porto used to bind at the
        // association, and this bind failed WSAEINVAL): bound where the program says, and its
        // receives complete into the port.
        EXPECT(porto_bind(u, reinterpret_cast<sockaddr *>(&ma), sizeof ma) == 0);
        sockaddr_in ua;
        int ualen = sizeof ua;
        EXPECT(porto_getsockname(u, reinterpret_cast<sockaddr *>(&ua), &ualen) == 0);
        EXPECT(ua.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && ua.sin_port != 0);
        {
            char rb[16] = {};
            PORTO_WSABUF rw = {sizeof rb, rb};
            uint32_t rf = 0;
            PORTO_OVERLAPPED rov;
            std::memset(&rov, 0, sizeof rov);
            EXPECT(porto_WSARecvFrom(u, &rw, 1, nullptr, &rf, nullptr, nullptr, &rov, nullptr) == PORTO_SOCKET_ERROR);
            EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
            PORTO_SOCKET snd = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
            EXPECT(porto_sendto(snd, "waited", 6, 0, reinterpret_cast<sockaddr *>(&ua), sizeof ua) == 6);
            uint32_t rbytes = 0;
            uint64_t rkey = 0;
            PORTO_OVERLAPPED *rgot = nullptr;
            EXPECT(porto_GetQueuedCompletionStatus(mp, &rbytes, &rkey, &rgot, 5000) == 1);
            EXPECT(rgot == &rov && rkey == 1 && rbytes == 6 && std::memcmp(rb, "waited", 6) == 0);
            EXPECT(porto_closesocket(snd) == 0);
        }
        // Associated, never bound: the first overlapped call binds implicitly.
        {
            PORTO_SOCKET w = porto_socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
            EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)w, mp2, 3, 0) == mp2);
            sockaddr_in wa;
            int walen = sizeof wa;
            EXPECT(porto_getsockname(w, reinterpret_cast<sockaddr *>(&wa), &walen) == PORTO_SOCKET_ERROR);
            EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // not bound yet, as on Windows
            PORTO_WSABUF sw = {5, const_cast<char *>("hello")};
            PORTO_OVERLAPPED sov;
            std::memset(&sov, 0, sizeof sov);
            int r = porto_WSASendTo(w, &sw, 1, nullptr, 0, reinterpret_cast<sockaddr *>(&ua), sizeof ua, &sov, nullptr);
            EXPECT(r == 0 || porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
            walen = sizeof wa;
            EXPECT(porto_getsockname(w, reinterpret_cast<sockaddr *>(&wa), &walen) == 0 && wa.sin_port != 0);
            uint32_t sb = 0;
            uint64_t sk = 0;
            PORTO_OVERLAPPED *sgot = nullptr;
            EXPECT(porto_GetQueuedCompletionStatus(mp2, &sb, &sk, &sgot, 5000) == 1);
            EXPECT(sgot == &sov && sk == 3 && sb == 5);
            EXPECT(porto_closesocket(w) == 0);
        }
        EXPECT(porto_listen(u, 1) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP); // not a stream socket
        PORTO_SOCKET t = porto_socket(AF_INET, SOCK_STREAM, IPPROTO_TCP);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)(uintptr_t)t, mp, 2, 0) == mp);
        char mb[8];
        PORTO_WSABUF mw = {sizeof mb, mb};
        uint32_t mf = 0;
        PORTO_OVERLAPPED mov;
        std::memset(&mov, 0, sizeof mov);
        EXPECT(porto_WSARecv(t, &mw, 1, nullptr, &mf, &mov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_send(t, mb, sizeof mb, 0) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_accept(t, nullptr, nullptr) == PORTO_INVALID_SOCKET);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // listen was not called
        EXPECT(porto_closesocket(u) == 0);
        EXPECT(porto_closesocket(u) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTSOCK);
        EXPECT(porto_closesocket(t) == 0);
        EXPECT(porto_CloseHandle(mp) == 1 && porto_CloseHandle(mp2) == 1);
    }

    EXPECT(porto_WSACleanup() == 0);
    // After the last WSACleanup: Winsock calls are WSANOTINITIALISED; the early port still
    // holds what was posted to it.
    EXPECT(porto_closesocket(12345) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSANOTINITIALISED);
    EXPECT(porto_bind(12345, reinterpret_cast<sockaddr *>(&a), sizeof a) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSANOTINITIALISED);
    {
        uint32_t eb = 0;
        uint64_t ek = 0;
        PORTO_OVERLAPPED *eo = reinterpret_cast<PORTO_OVERLAPPED *>(1);
        EXPECT(porto_GetQueuedCompletionStatus(early, &eb, &ek, &eo, 0) == 1);
        EXPECT(eb == 3 && ek == 5 && eo == nullptr);
        EXPECT(porto_CloseHandle(early) == 1);
        // The early event kept its state through WSAStartup and WSACleanup.
        EXPECT(porto_WSAWaitForMultipleEvents(1, &early_event, 1, 0, 0) == PORTO_WSA_WAIT_EVENT_0);
        EXPECT(porto_WSACloseEvent(early_event) == 1);
    }

    // 6. The engine's limits from C (PORTO_STARTUP), and the socket past the limit answering
    // WSAEMFILE (it used to be WSASYSCALLFAILURE).
    {
        PORTO_STARTUP bad = {1, 0, 4096, 0, 1000, 0, 0, 0}; // a frame size no power of two
        EXPECT(porto_WSAStartupEx(&bad) == PORTO_WSAEINVAL);
        PORTO_STARTUP small = {1, 0, 4096, 0, 4096, 64, 4, 0};
        EXPECT(porto_WSAStartupEx(&small) == 0);
        PORTO_HANDLE lp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, nullptr, 0, 0);
        std::vector<PORTO_SOCKET> socks;
        int refused = 0;
        for (int i = 0; i < 5; i++) {
            PORTO_SOCKET u = porto_socket(AF_INET, SOCK_DGRAM, 0);
            EXPECT(u != PORTO_INVALID_SOCKET);
            socks.push_back(u);
            // The shard takes the socket when it gets its kernel socket: at bind.
            sockaddr_in la6;
            std::memset(&la6, 0, sizeof la6);
            la6.sin_family = AF_INET;
            la6.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)u, lp, i, 0) == lp);
            if (porto_bind(u, reinterpret_cast<sockaddr *>(&la6), sizeof la6) != 0) {
                EXPECT(porto_WSAGetLastError() == PORTO_WSAEMFILE);
                refused++;
            }
        }
        EXPECT(refused == 1); // four sockets fit the shard, the fifth is refused
        for (PORTO_SOCKET u : socks)
            EXPECT(porto_closesocket(u) == 0);
        EXPECT(porto_CloseHandle(lp) == 1);
        EXPECT(porto_WSACleanup() == 0);
    }
    if (failures == 0)
        std::printf("windows_semantics: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
