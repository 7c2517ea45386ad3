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
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    EXPECT(sendto(c, "hello", 5, 0, reinterpret_cast<sockaddr *>(&a), sizeof a) == 5);
    uint32_t bytes = 0;
    uint64_t key = 0;
    PORTO_OVERLAPPED *got = nullptr;
    EXPECT(porto_GetQueuedCompletionStatus(iocp, &bytes, &key, &got, 5000) == 1);
    EXPECT(got == &ov && key == 7 && bytes == 5);
    EXPECT(PORTO_HasOverlappedIoCompleted(&ov));
    EXPECT(ov.Internal == 0 && ov.InternalHigh == 5);
    close(c);
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

    EXPECT(porto_WSACleanup() == 0);
    if (failures == 0)
        std::printf("windows_semantics: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
