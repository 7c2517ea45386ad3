// Compiles porto.h as C++ (-Wall -Wextra -Werror) and checks the boundary from the caller's
// side: bad handles, NULL pointers and a timeout each fail with Windows' error number, and
// a posted completion comes back with its key, byte count and OVERLAPPED; RIO's function
// table, its misuses (a RIO_BUF outside its buffer, an unknown buffer, unknown and
// unsupported flags, a queue too small, a resize below what is out, a corrupt CQ handle),
// and closesocket aborting a request queue's receives once each.
#include "porto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstring>
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

int main() {
    // Before WSAStartup.
    EXPECT(porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0) == PORTO_INVALID_SOCKET);
    EXPECT(porto_WSAGetLastError() == PORTO_WSANOTINITIALISED);
    // Two shards: associations, listeners and connections spread over them (round robin).
    PORTO_STARTUP cfg = {2, 0, 4096, 0, 0, 0, 0, 0};
    EXPECT(porto_WSAStartupEx(&cfg) == 0);

    PORTO_SOCKET s = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
    EXPECT(s != PORTO_INVALID_SOCKET);
    EXPECT(porto_WSASocket(AF_INET, SOCK_RAW, 0, nullptr, 0, 0) == PORTO_INVALID_SOCKET);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAESOCKTNOSUPPORT);
    EXPECT(porto_bind(s, nullptr, 16) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
    EXPECT(porto_bind(s + 1000, nullptr, 16) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT || porto_WSAGetLastError() == PORTO_WSAENOTSOCK);

    sockaddr_in a;
    std::memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT(porto_bind(s, reinterpret_cast<sockaddr *>(&a), 4) == PORTO_SOCKET_ERROR); // too short
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
    EXPECT(porto_bind(s, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0);

    // An overlapped receive before the socket has a port: porto completes only into ports.
    PORTO_OVERLAPPED ov;
    std::memset(&ov, 0, sizeof ov);
    char data[64];
    PORTO_WSABUF b = {sizeof data, data};
    uint32_t flags = 0;
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, &ov, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);

    PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
    EXPECT(iocp != 0);
    EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)s, iocp, 7, 0) == iocp);
    EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)s, iocp, 7, 0) == 0); // once only
    // No OVERLAPPED: the blocking call, as on Windows (here non-blocking mode: nothing waits).
    uint32_t nb = 1;
    EXPECT(porto_ioctlsocket(s, PORTO_FIONBIO, &nb) == 0);
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, nullptr, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEWOULDBLOCK);
    nb = 0;
    EXPECT(porto_ioctlsocket(s, PORTO_FIONBIO, &nb) == 0);
    // A completion routine is not supported.
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, &ov, reinterpret_cast<void *>(1)) ==
           PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP);

    PORTO_OVERLAPPED_ENTRY e[4];
    uint32_t n = 99;
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, nullptr, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
    EXPECT(porto_GetQueuedCompletionStatusEx((PORTO_HANDLE)((uintptr_t)iocp + 1000), e, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);

    // PostQueuedCompletionStatus round trip.
    EXPECT(porto_PostQueuedCompletionStatus(iocp, 42, 9, &ov) == 1);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 1000, 0) == 1);
    EXPECT(n == 1 && e[0].lpCompletionKey == 9 && e[0].dwNumberOfBytesTransferred == 42 && e[0].lpOverlapped == &ov &&
           e[0].Internal == 0);

    // CancelIoEx(s, NULL): every posted operation ends aborted, once; the socket stays usable.
    PORTO_OVERLAPPED ov2;
    std::memset(&ov2, 0, sizeof ov2);
    char data2[64];
    PORTO_WSABUF b2 = {sizeof data2, data2};
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, &ov, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSARecvFrom(s, &b2, 1, nullptr, &flags, nullptr, nullptr, &ov2, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_CancelIoEx(s, nullptr) == 1);
    {
        int aborted = 0;
        for (int round = 0; round < 20 && aborted < 2; round++) {
            uint32_t got = 0;
            if (porto_GetQueuedCompletionStatusEx(iocp, e, 4, &got, 100, 0))
                for (uint32_t i = 0; i < got; i++)
                    aborted += e[i].Internal == PORTO_WSA_OPERATION_ABORTED &&
                               (e[i].lpOverlapped == &ov || e[i].lpOverlapped == &ov2);
        }
        EXPECT(aborted == 2);
    }

    // A posted receive, then closesocket: it completes once, aborted.
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, &ov, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
    EXPECT(porto_closesocket(s) == 0);
    EXPECT(porto_closesocket(s) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTSOCK);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 2000, 0) == 1);
    EXPECT(n == 1 && e[0].lpOverlapped == &ov && e[0].Internal == PORTO_WSA_OPERATION_ABORTED && e[0].lpCompletionKey == 7);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 50, 0) == 0); // nothing more
    // TCP: each call out of Winsock's order, with Windows' answer.
    {
        PORTO_SOCKET l = porto_WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, 0);
        PORTO_SOCKET t = porto_WSASocket(AF_INET, SOCK_STREAM, 0, nullptr, 0, 0);
        PORTO_SOCKET u = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        EXPECT(l != PORTO_INVALID_SOCKET && t != PORTO_INVALID_SOCKET && u != PORTO_INVALID_SOCKET);
        EXPECT(porto_listen(l, 16) == PORTO_SOCKET_ERROR); // not bound
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_listen(u, 16) == PORTO_SOCKET_ERROR); // a datagram socket
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP);
        sockaddr_in la = a;
        la.sin_port = 0;
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        EXPECT(porto_listen(l, 16) == 0);
        PORTO_LPFN_ACCEPTEX accept_ex = nullptr;
        PORTO_GUID gid = PORTO_WSAID_ACCEPTEX;
        uint32_t got = 0;
        EXPECT(porto_WSAIoctl(l, PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER, &gid, sizeof gid, &accept_ex,
                              sizeof accept_ex, &got, nullptr, nullptr) == 0);
        EXPECT(accept_ex == porto_AcceptEx && got == sizeof accept_ex);
        static char abuf[256];
        PORTO_OVERLAPPED aov;
        std::memset(&aov, 0, sizeof aov);
        EXPECT(accept_ex(l, t, abuf, 0, 32, 32, nullptr, &aov) == 0); // the listener has no port yet
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)l, iocp, 11, 0) == iocp);
        EXPECT(accept_ex(l, t, abuf, 0, 16, 32, nullptr, &aov) == 0); // address area too small
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(accept_ex(l, u, abuf, 0, 32, 32, nullptr, &aov) == 0); // not a TCP socket
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        char rb[16];
        PORTO_WSABUF w = {sizeof rb, rb};
        uint32_t fl = 0;
        EXPECT(porto_WSARecv(t, &w, 1, nullptr, &fl, &aov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_ConnectEx(t, reinterpret_cast<sockaddr *>(&la), sizeof la, nullptr, 0, nullptr, &aov) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // ConnectEx wants a bound socket
        EXPECT(porto_DisconnectEx(t, &aov, 0, 0) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_setsockopt(t, SOL_SOCKET, PORTO_SO_UPDATE_ACCEPT_CONTEXT, &l, sizeof l) == 0);
        int one = 1;
        EXPECT(porto_setsockopt(t, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOPROTOOPT); // not passed to the kernel
        // Before the kernel socket exists (as Windows programs do): kept, applied when it is
        // made (here: by the AcceptEx below).
        EXPECT(porto_setsockopt(t, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0);
        // A posted AcceptEx, then closesocket on the listener: it ends aborted, once.
        EXPECT(accept_ex(l, t, abuf, 0, 32, 32, nullptr, &aov) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        EXPECT(porto_closesocket(l) == 0);
        uint32_t k = 0;
        EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 2000, 0) == 1);
        EXPECT(k == 1 && e[0].lpOverlapped == &aov && e[0].Internal == PORTO_WSA_OPERATION_ABORTED &&
               e[0].lpCompletionKey == 11);
        EXPECT(porto_closesocket(t) == 0);
        EXPECT(porto_closesocket(u) == 0);
    }

    // A connection made by AcceptEx (with first data) and ConnectEx (with data), then a
    // 100 KB WSASend (many frames, one completion) read back whole with WSARecv, then
    // DisconnectEx.
    {
        PORTO_SOCKET l = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        PORTO_SOCKET acc = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        PORTO_SOCKET c = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        sockaddr_in6 la;
        std::memset(&la, 0, sizeof la);
        la.sin6_family = AF_INET6;
        la.sin6_addr = in6addr_loopback;
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        EXPECT(porto_listen(l, 4) == 0);
        int32_t lalen = sizeof la;
        EXPECT(porto_getsockname(l, reinterpret_cast<sockaddr *>(&la), &lalen) == 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)l, iocp, 21, 0) == iocp);
        static char abuf[16 + 2 * 44];
        PORTO_OVERLAPPED aov, cov, sov, rov, dov;
        std::memset(&aov, 0, sizeof aov);
        std::memset(&cov, 0, sizeof cov);
        std::memset(&sov, 0, sizeof sov);
        std::memset(&rov, 0, sizeof rov);
        std::memset(&dov, 0, sizeof dov);
        EXPECT(porto_AcceptEx(l, acc, abuf, 16, 44, 44, nullptr, &aov) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        sockaddr_in6 any6;
        std::memset(&any6, 0, sizeof any6);
        any6.sin6_family = AF_INET6;
        any6.sin6_addr = in6addr_loopback;
        EXPECT(porto_bind(c, reinterpret_cast<sockaddr *>(&any6), sizeof any6) == 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)c, iocp, 22, 0) == iocp);
        const char hello[] = "hello, AcceptEx"; // 15 bytes + NUL = 16: exactly AcceptEx's room
        EXPECT(porto_ConnectEx(c, reinterpret_cast<sockaddr *>(&la), sizeof la, hello, sizeof hello, nullptr, &cov) ==
               0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        int accepted = 0, connected = 0;
        for (int round = 0; round < 50 && !(accepted && connected); round++) {
            uint32_t k = 0;
            if (!porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 100, 0))
                continue;
            for (uint32_t i = 0; i < k; i++) {
                if (e[i].lpOverlapped == &aov) {
                    EXPECT(e[i].Internal == 0 && e[i].lpCompletionKey == 21 && e[i].dwNumberOfBytesTransferred == 16);
                    accepted = 1;
                } else if (e[i].lpOverlapped == &cov) {
                    EXPECT(e[i].Internal == 0 && e[i].lpCompletionKey == 22 && e[i].dwNumberOfBytesTransferred == 16);
                    connected = 1;
                }
            }
        }
        EXPECT(accepted && connected);
        EXPECT(std::memcmp(abuf, hello, sizeof hello) == 0);
        sockaddr *local = nullptr, *remote = nullptr;
        int32_t llen = 0, rlen = 0;
        porto_GetAcceptExSockaddrs(abuf, 16, 44, 44, &local, &llen, &remote, &rlen);
        EXPECT(local && remote && local->sa_family == AF_INET6 && remote->sa_family == AF_INET6 &&
               llen == (int32_t)sizeof(sockaddr_in6) && rlen == (int32_t)sizeof(sockaddr_in6));
        sockaddr_in6 cl;
        int32_t cllen = sizeof cl;
        EXPECT(porto_getsockname(c, reinterpret_cast<sockaddr *>(&cl), &cllen) == 0);
        EXPECT(remote && reinterpret_cast<sockaddr_in6 *>(remote)->sin6_port == cl.sin6_port);
        EXPECT(porto_setsockopt(acc, SOL_SOCKET, PORTO_SO_UPDATE_ACCEPT_CONTEXT, &l, sizeof l) == 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)acc, iocp, 23, 0) == iocp);

        static char big[100000], got[100000];
        for (size_t i = 0; i < sizeof big; i++)
            big[i] = (char)(i * 7 + 3);
        PORTO_WSABUF sb[2] = {{60000, big}, {40000, big + 60000}};
        EXPECT(porto_WSASend(c, sb, 2, nullptr, 0, &sov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        size_t have = 0;
        int sends_done = 0, recv_posted = 0;
        for (int round = 0; round < 400 && (have < sizeof got || !sends_done); round++) {
            if (!recv_posted && have < sizeof got) {
                PORTO_WSABUF rb = {(uint32_t)(sizeof got - have), got + have};
                uint32_t rfl = 0;
                std::memset(&rov, 0, sizeof rov);
                EXPECT(porto_WSARecv(acc, &rb, 1, nullptr, &rfl, &rov, nullptr) == PORTO_SOCKET_ERROR);
                recv_posted = 1;
            }
            uint32_t k = 0;
            if (!porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 100, 0))
                continue;
            for (uint32_t i = 0; i < k; i++) {
                if (e[i].lpOverlapped == &sov) {
                    EXPECT(e[i].Internal == 0 && e[i].dwNumberOfBytesTransferred == sizeof big);
                    sends_done++;
                } else if (e[i].lpOverlapped == &rov) {
                    EXPECT(e[i].Internal == 0 && e[i].lpCompletionKey == 23 && e[i].dwNumberOfBytesTransferred > 0);
                    have += e[i].dwNumberOfBytesTransferred;
                    recv_posted = 0;
                }
            }
        }
        EXPECT(sends_done == 1); // one completion for the whole send
        EXPECT(have == sizeof got && std::memcmp(big, got, sizeof got) == 0);

        // RIO over the same connection: a 64 KB RIOSend from registered memory, received whole
        // by one RIOReceive with RIO_MSG_WAITALL on the other side.
        {
            PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
            PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
            uint32_t gotb = 0;
            EXPECT(porto_WSAIoctl(c, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio,
                                  sizeof rio, &gotb, nullptr, nullptr) == 0);
            static char rmem[2 * 65536];
            for (size_t i = 0; i < 65536; i++)
                rmem[i] = (char)(i * 13 + 1);
            PORTO_RIO_BUFFERID rb = rio.RIORegisterBuffer(rmem, sizeof rmem);
            PORTO_RIO_CQ rcq = rio.RIOCreateCompletionQueue(8, nullptr);
            PORTO_RIO_RQ tx = rio.RIOCreateRequestQueue(c, 1, 1, 1, 1, rcq, rcq, (void *)61);
            PORTO_RIO_RQ rx = rio.RIOCreateRequestQueue(acc, 1, 1, 1, 1, rcq, rcq, (void *)62);
            EXPECT(rb != PORTO_RIO_INVALID_BUFFERID && rcq != PORTO_RIO_INVALID_CQ && tx != PORTO_RIO_INVALID_RQ &&
                   rx != PORTO_RIO_INVALID_RQ);
            PORTO_RIO_BUF out = {rb, 0, 65536}, in = {rb, 65536, 65536};
            EXPECT(rio.RIOSend(tx, &out, 1, PORTO_RIO_MSG_WAITALL, nullptr) == 0); // receives only
            EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
            EXPECT(rio.RIOReceive(rx, &in, 1, PORTO_RIO_MSG_WAITALL, (void *)2) == 1);
            EXPECT(rio.RIOSend(tx, &out, 1, 0, (void *)1) == 1);
            PORTO_RIORESULT rr[4];
            int sent_ok = 0, recv_ok = 0;
            for (int round = 0; round < 500 && !(sent_ok && recv_ok); round++) {
                uint32_t k = rio.RIODequeueCompletion(rcq, rr, 4);
                for (uint32_t i = 0; i < k && k != PORTO_RIO_CORRUPT_CQ; i++) {
                    sent_ok |= rr[i].RequestContext == 1 && rr[i].Status == 0 && rr[i].BytesTransferred == 65536 &&
                               rr[i].SocketContext == 61;
                    recv_ok |= rr[i].RequestContext == 2 && rr[i].Status == 0 && rr[i].BytesTransferred == 65536 &&
                               rr[i].SocketContext == 62;
                }
                if (!(sent_ok && recv_ok)) {
                    uint32_t z = 0;
                    porto_GetQueuedCompletionStatusEx(iocp, e, 4, &z, 5, 0); // a 5 ms pause
                }
            }
            EXPECT(sent_ok && recv_ok);
            EXPECT(std::memcmp(rmem, rmem + 65536, 65536) == 0);
            rio.RIOCloseCompletionQueue(rcq);
            rio.RIODeregisterBuffer(rb);
        }
        EXPECT(porto_DisconnectEx(c, &dov, 0, 0) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        uint32_t k = 0;
        EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 2000, 0) == 1);
        EXPECT(k == 1 && e[0].lpOverlapped == &dov && e[0].Internal == 0);
        EXPECT(porto_closesocket(c) == 0 && porto_closesocket(acc) == 0 && porto_closesocket(l) == 0);
    }

    // Multicast through setsockopt: join on loopback, exclude a source, include it again.
    {
        PORTO_SOCKET rx = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        PORTO_SOCKET tx = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        sockaddr_in any4, txa;
        std::memset(&any4, 0, sizeof any4);
        any4.sin_family = AF_INET;
        any4.sin_addr.s_addr = htonl(INADDR_ANY);
        EXPECT(porto_bind(rx, reinterpret_cast<sockaddr *>(&any4), sizeof any4) == 0);
        int32_t alen = sizeof any4;
        EXPECT(porto_getsockname(rx, reinterpret_cast<sockaddr *>(&any4), &alen) == 0);
        txa = a;
        txa.sin_port = 0;
        EXPECT(porto_bind(tx, reinterpret_cast<sockaddr *>(&txa), sizeof txa) == 0);
        ip_mreq m;
        m.imr_multiaddr.s_addr = inet_addr("239.77.9.9");
        m.imr_interface.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_setsockopt(rx, IPPROTO_IP, IP_ADD_MEMBERSHIP, &m, sizeof m) == 0);
        in_addr lo;
        lo.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_setsockopt(tx, IPPROTO_IP, IP_MULTICAST_IF, &lo, sizeof lo) == 0);
        unsigned char ttl = 0;
        int32_t tlen = sizeof ttl;
        EXPECT(porto_getsockopt(tx, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, &tlen) == 0 && ttl == 1 && tlen == 1);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)rx, iocp, 31, 0) == iocp);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)tx, iocp, 32, 0) == iocp);
        sockaddr_in group;
        std::memset(&group, 0, sizeof group);
        group.sin_family = AF_INET;
        group.sin_port = any4.sin_port;
        group.sin_addr = m.imr_multiaddr;
        // Sends one datagram to the group; true if rx received it within 300 ms.
        auto round_trip = [&](const char *text) {
            static char rbuf[64];
            PORTO_WSABUF rb = {sizeof rbuf, rbuf};
            PORTO_OVERLAPPED rov, sov;
            std::memset(&rov, 0, sizeof rov);
            std::memset(&sov, 0, sizeof sov);
            uint32_t fl = 0;
            porto_WSARecvFrom(rx, &rb, 1, nullptr, &fl, nullptr, nullptr, &rov, nullptr);
            PORTO_WSABUF sb = {(uint32_t)std::strlen(text), (char *)text};
            porto_WSASendTo(tx, &sb, 1, nullptr, 0, reinterpret_cast<sockaddr *>(&group), sizeof group, &sov,
                            nullptr);
            int got = 0, sent = 0;
            for (int i = 0; i < 30 && !(got && sent); i++) {
                uint32_t k = 0;
                if (porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 10, 0))
                    for (uint32_t j = 0; j < k; j++) {
                        got |= e[j].lpOverlapped == &rov && e[j].Internal == 0 &&
                               std::memcmp(rbuf, text, std::strlen(text)) == 0;
                        sent |= e[j].lpOverlapped == &sov;
                    }
            }
            if (!got) { // take the receive back before `rov` goes out of scope
                porto_CancelIoEx(rx, &rov);
                uint32_t k = 0;
                for (int i = 0; i < 100; i++) {
                    if (porto_GetQueuedCompletionStatusEx(iocp, e, 4, &k, 10, 0) && e[0].lpOverlapped == &rov)
                        break;
                }
            }
            return got != 0;
        };
        EXPECT(round_trip("joined"));
        ip_mreq_source src;
        src.imr_multiaddr = m.imr_multiaddr;
        src.imr_interface = m.imr_interface;
        src.imr_sourceaddr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_setsockopt(rx, IPPROTO_IP, IP_BLOCK_SOURCE, &src, sizeof src) == 0);
        EXPECT(!round_trip("blocked"));
        EXPECT(porto_setsockopt(rx, IPPROTO_IP, IP_UNBLOCK_SOURCE, &src, sizeof src) == 0);
        EXPECT(round_trip("unblocked"));
        EXPECT(porto_setsockopt(rx, IPPROTO_IP, IP_DROP_MEMBERSHIP, &m, sizeof m) == 0);
        EXPECT(porto_setsockopt(rx, IPPROTO_IP, IP_DROP_MEMBERSHIP, &m, sizeof m) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEADDRNOTAVAIL); // the kernel's EADDRNOTAVAIL
        EXPECT(porto_closesocket(rx) == 0 && porto_closesocket(tx) == 0);
    }

    // FILE_SKIP_COMPLETION_PORT_ON_SUCCESS: what completes at once returns its result and
    // queues nothing; what must wait pends as usual; nothing overtakes what is in flight.
    {
        PORTO_SOCKET k = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        PORTO_SOCKET q = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        sockaddr_in ka = a, qa = a;
        ka.sin_port = 0;
        qa.sin_port = 0;
        EXPECT(porto_bind(k, reinterpret_cast<sockaddr *>(&ka), sizeof ka) == 0);
        EXPECT(porto_bind(q, reinterpret_cast<sockaddr *>(&qa), sizeof qa) == 0);
        int32_t kl = sizeof ka, ql = sizeof qa;
        EXPECT(porto_getsockname(k, reinterpret_cast<sockaddr *>(&ka), &kl) == 0);
        EXPECT(porto_getsockname(q, reinterpret_cast<sockaddr *>(&qa), &ql) == 0);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)k, iocp, 41, 0) == iocp);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)q, iocp, 42, 0) == iocp);
        EXPECT(porto_SetFileCompletionNotificationModes(k, 0x80) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_SetFileCompletionNotificationModes(k, PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS) == 1);
        EXPECT(porto_SetFileCompletionNotificationModes(q, PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS |
                                                               PORTO_FILE_SKIP_SET_EVENT_ON_HANDLE) == 1);
        char hi[] = {'h', 'e', 'l', 'l', 'o'};
        PORTO_WSABUF sb = {sizeof hi, hi};
        PORTO_OVERLAPPED sov, rov, rov2;
        std::memset(&sov, 0, sizeof sov);
        std::memset(&rov, 0, sizeof rov);
        std::memset(&rov2, 0, sizeof rov2);
        auto settle = [&]() { // lets a loopback datagram reach the receiver
            uint32_t z = 0;
            porto_GetQueuedCompletionStatusEx(iocp, e, 4, &z, 20, 0);
            return z;
        };
        uint32_t sentb = 0;
        EXPECT(porto_WSASendTo(q, &sb, 1, &sentb, 0, reinterpret_cast<sockaddr *>(&ka), sizeof ka, &sov, nullptr) == 0);
        EXPECT(sentb == sizeof hi); // at once, nothing queued
        EXPECT(settle() == 0);
        char rbuf[16];
        PORTO_WSABUF rb = {sizeof rbuf, rbuf};
        sockaddr_in from;
        int32_t fromlen = sizeof from;
        uint32_t got = 0, fl = 0;
        EXPECT(porto_WSARecvFrom(k, &rb, 1, &got, &fl, reinterpret_cast<sockaddr *>(&from), &fromlen, &rov,
                                 nullptr) == 0);
        EXPECT(got == sizeof hi && std::memcmp(rbuf, hi, sizeof hi) == 0 && from.sin_port == qa.sin_port);
        uint32_t n0 = 0;
        EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n0, 50, 0) == 0); // nothing queued
        EXPECT(porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT);
        // Nothing waiting: it pends. A second receive, with data waiting by then, may not
        // overtake it: it pends too, and they complete in order through the port.
        EXPECT(porto_WSARecvFrom(k, &rb, 1, &got, &fl, nullptr, nullptr, &rov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        char r2[16];
        PORTO_WSABUF rb2 = {sizeof r2, r2};
        EXPECT(porto_WSASendTo(q, &sb, 1, &sentb, 0, reinterpret_cast<sockaddr *>(&ka), sizeof ka, &sov, nullptr) == 0);
        EXPECT(porto_WSASendTo(q, &sb, 1, &sentb, 0, reinterpret_cast<sockaddr *>(&ka), sizeof ka, &sov, nullptr) == 0);
        EXPECT(porto_WSARecvFrom(k, &rb2, 1, &got, &fl, nullptr, nullptr, &rov2, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        int first = 0, second = 0;
        for (int round = 0; round < 50 && !(first && second); round++) {
            uint32_t z = 0;
            if (porto_GetQueuedCompletionStatusEx(iocp, e, 4, &z, 50, 0))
                for (uint32_t i = 0; i < z; i++) {
                    if (e[i].lpOverlapped == &rov) {
                        EXPECT(!second); // in the order posted
                        first = e[i].Internal == 0 && e[i].dwNumberOfBytesTransferred == sizeof hi;
                    } else if (e[i].lpOverlapped == &rov2) {
                        second = e[i].Internal == 0 && e[i].dwNumberOfBytesTransferred == sizeof hi;
                    }
                }
        }
        EXPECT(first && second);
        // A datagram bigger than the receive's buffers: WSAEMSGSIZE at once.
        EXPECT(porto_WSASendTo(q, &sb, 1, &sentb, 0, reinterpret_cast<sockaddr *>(&ka), sizeof ka, &sov, nullptr) == 0);
        settle();
        PORTO_WSABUF tiny = {2, rbuf};
        EXPECT(porto_WSARecvFrom(k, &tiny, 1, &got, &fl, nullptr, nullptr, &rov, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEMSGSIZE && rbuf[0] == 'h' && rbuf[1] == 'e');
        EXPECT(settle() == 0);
        EXPECT(porto_closesocket(k) == 0 && porto_closesocket(q) == 0);
    }

    // QOS2: a flow marks its socket (read back from the kernel), reports its priority and
    // rate, shapes at the rate set, counts what it sent; removed, the socket is unmarked.
    {
        PORTO_QOS_VERSION bad = {2, 0}, v1 = {1, 0};
        PORTO_HANDLE qh = 0;
        EXPECT(porto_QOSCreateHandle(&bad, &qh) == 0 && porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_QOSCreateHandle(&v1, &qh) == 1 && qh != 0);
        PORTO_SOCKET u = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        PORTO_SOCKET sink = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        sockaddr_in ua = a, sa = a;
        ua.sin_port = 0;
        sa.sin_port = 0;
        EXPECT(porto_bind(u, reinterpret_cast<sockaddr *>(&ua), sizeof ua) == 0);
        EXPECT(porto_bind(sink, reinterpret_cast<sockaddr *>(&sa), sizeof sa) == 0);
        int32_t sl = sizeof sa;
        EXPECT(porto_getsockname(sink, reinterpret_cast<sockaddr *>(&sa), &sl) == 0);
        PORTO_QOS_FLOWID fid = 0;
        EXPECT(porto_QOSAddSocketToFlow(qh, u, nullptr, PORTO_QOSTrafficTypeAudioVideo, 0, &fid) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // not associated yet: no engine socket
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)u, iocp, 51, 0) == iocp);
        EXPECT(porto_QOSAddSocketToFlow(qh, u, nullptr, 9, 0, &fid) == 0); // no such traffic type
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_QOSAddSocketToFlow(qh, u, reinterpret_cast<sockaddr *>(&sa), PORTO_QOSTrafficTypeAudioVideo,
                                        PORTO_QOS_NON_ADAPTIVE_FLOW, &fid) == 1 &&
               fid != 0);
        int tos = -1;
        int32_t tl = sizeof tos;
        EXPECT(porto_getsockopt(u, IPPROTO_IP, IP_TOS, &tos, &tl) == 0 && tos == (40 << 2)); // AudioVideo: DSCP 40
        PORTO_QOS_PACKET_PRIORITY pp;
        uint32_t psz = sizeof pp;
        EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryPacketPriority, &psz, &pp, 0, nullptr) == 1);
        EXPECT(psz == sizeof pp && pp.ConformantDSCPValue == 40 && pp.ConformantL2Value == 5);
        uint32_t small = 2;
        EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryPacketPriority, &small, &pp, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT && small == sizeof pp); // the room it needs
        EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryFlowFundamentals, &psz, &pp, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP);
        PORTO_QOS_FLOWRATE_OUTGOING rate = {2000000, PORTO_QOSShapeAndMark, 0}; // 2 Mbit/s
        EXPECT(porto_QOSSetFlow(qh, fid, PORTO_QOSSetOutgoingRate, sizeof rate, &rate, 0, nullptr) == 1);
        PORTO_QOS_FLOWRATE_OUTGOING got_rate;
        uint32_t rsz = sizeof got_rate;
        EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryOutgoingRate, &rsz, &got_rate, 0, nullptr) == 1);
        EXPECT(got_rate.Bandwidth == 2000000 && got_rate.ShapingBehavior == PORTO_QOSShapeAndMark);
        // 40 datagrams of 1000 B at 2 Mbit/s: 160 ms of traffic past the 10 ms bucket, so the
        // shaping holds some back; each still completes, and the flow counts them.
        static char payload[1000];
        static PORTO_OVERLAPPED sends[40];
        for (int i = 0; i < 40; i++) {
            std::memset(&sends[i], 0, sizeof sends[i]);
            PORTO_WSABUF pb = {sizeof payload, payload};
            EXPECT(porto_WSASendTo(u, &pb, 1, nullptr, 0, reinterpret_cast<sockaddr *>(&sa), sizeof sa, &sends[i],
                                   nullptr) == PORTO_SOCKET_ERROR);
        }
        int done = 0;
        for (int round = 0; round < 300 && done < 40; round++) {
            uint32_t z = 0;
            if (porto_GetQueuedCompletionStatusEx(iocp, e, 4, &z, 20, 0))
                for (uint32_t i = 0; i < z; i++)
                    done += e[i].lpCompletionKey == 51 && e[i].Internal == 0 && e[i].dwNumberOfBytesTransferred == 1000;
        }
        EXPECT(done == 40);
        PORTO_QOS_FLOW_COUNTERS fc;
        uint32_t csz = sizeof fc;
        for (int round = 0; round < 50; round++) { // published by the shard as it goes
            EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryFlowCounters, &csz, &fc, 0, nullptr) == 1);
            if (fc.Sent == 40)
                break;
            uint32_t z = 0;
            porto_GetQueuedCompletionStatusEx(iocp, e, 4, &z, 20, 0);
        }
        EXPECT(fc.Sent == 40 && fc.SentBytes == 40000 && fc.Delayed > 0 && fc.Dropped == 0);
        int32_t ty = PORTO_QOSTrafficTypeVoice;
        EXPECT(porto_QOSSetFlow(qh, fid, PORTO_QOSSetTrafficType, sizeof ty, &ty, 0, nullptr) == 1);
        EXPECT(porto_getsockopt(u, IPPROTO_IP, IP_TOS, &tos, &tl) == 0 && tos == (56 << 2)); // Voice: DSCP 56
        uint32_t dscp = 10; // QOSSetOutgoingDSCPValue: AF11 instead of the class's
        EXPECT(porto_QOSSetFlow(qh, fid, PORTO_QOSSetOutgoingDSCPValue, sizeof dscp, &dscp, 0, nullptr) == 1);
        EXPECT(porto_getsockopt(u, IPPROTO_IP, IP_TOS, &tos, &tl) == 0 && tos == (10 << 2));
        psz = sizeof pp;
        EXPECT(porto_QOSQueryFlow(qh, fid, PORTO_QOSQueryPacketPriority, &psz, &pp, 0, nullptr) == 1);
        EXPECT(pp.ConformantDSCPValue == 10 && pp.ConformantL2Value == 7); // Voice's 802.1p stays
        dscp = 64;
        EXPECT(porto_QOSSetFlow(qh, fid, PORTO_QOSSetOutgoingDSCPValue, sizeof dscp, &dscp, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_getsockopt(u, IPPROTO_IP, IP_TOS, &tos, &tl) == 0 && tos == (10 << 2));
        EXPECT(porto_QOSRemoveSocketFromFlow(qh, u, fid, 0) == 1);
        EXPECT(porto_getsockopt(u, IPPROTO_IP, IP_TOS, &tos, &tl) == 0 && tos == 0);
        EXPECT(porto_QOSRemoveSocketFromFlow(qh, u, fid, 0) == 0 && porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_QOSCloseHandle(qh) == 1);
        EXPECT(porto_QOSCloseHandle(qh) == 0 && porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);
        EXPECT(porto_closesocket(u) == 0 && porto_closesocket(sink) == 0);
    }

    // RIO: the function table, then each misuse with Windows' answer.
    {
        PORTO_SOCKET r = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, PORTO_WSA_FLAG_REGISTERED_IO);
        PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
        std::memset(&rio, 0, sizeof rio);
        PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
        uint32_t got = 0;
        EXPECT(porto_WSAIoctl(r, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, 8, &got,
                              nullptr, nullptr) == PORTO_SOCKET_ERROR); // table does not fit
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        PORTO_GUID other = id;
        other.Data1 ^= 1;
        EXPECT(porto_WSAIoctl(r, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &other, sizeof other, &rio,
                              sizeof rio, &got, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(porto_WSAIoctl(r, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, sizeof rio,
                              &got, nullptr, nullptr) == 0);
        EXPECT(got == sizeof rio && rio.cbSize == sizeof rio && rio.RIOReceiveEx != nullptr);

        static char mem[4096];
        EXPECT(rio.RIORegisterBuffer(nullptr, 16) == PORTO_RIO_INVALID_BUFFERID);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        PORTO_RIO_BUFFERID buf = rio.RIORegisterBuffer(mem, sizeof mem);
        EXPECT(buf != PORTO_RIO_INVALID_BUFFERID);
        EXPECT(rio.RIOCreateCompletionQueue(0, nullptr) == PORTO_RIO_INVALID_CQ);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        PORTO_RIO_CQ cq = rio.RIOCreateCompletionQueue(4, nullptr); // polled
        EXPECT(cq != PORTO_RIO_INVALID_CQ);
        EXPECT(rio.RIONotify(cq) == PORTO_WSAEINVAL); // no notification configured
        EXPECT(rio.RIOCreateRequestQueue(r, 4, 1, 4, 1, cq, cq, nullptr) == PORTO_RIO_INVALID_RQ);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOBUFS); // 8 outstanding, 4 entries
        EXPECT(rio.RIOCreateRequestQueue(r, 2, 2, 2, 1, cq, cq, nullptr) == PORTO_RIO_INVALID_RQ);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // one buffer per request
        PORTO_RIO_RQ rq = rio.RIOCreateRequestQueue(r, 2, 1, 2, 1, cq, cq, (void *)5);
        EXPECT(rq != PORTO_RIO_INVALID_RQ);

        PORTO_RIO_BUF outside = {buf, 4000, 200};
        EXPECT(rio.RIOReceive(rq, &outside, 1, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        PORTO_RIO_BUF unknown = {(PORTO_RIO_BUFFERID)((uintptr_t)buf + 1000), 0, 16};
        EXPECT(rio.RIOReceive(rq, &unknown, 1, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        PORTO_RIO_BUF in = {buf, 0, 1024};
        EXPECT(rio.RIOReceive(rq, &in, 1, PORTO_RIO_MSG_WAITALL, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(rio.RIOReceive(rq, &in, 1, 0x100, nullptr) == 0); // an unknown flag
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        PORTO_RIO_BUF small_addr = {buf, 2048, 8};
        EXPECT(rio.RIOReceiveEx(rq, &in, 1, nullptr, &small_addr, nullptr, nullptr, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        EXPECT(rio.RIOReceive(rq, nullptr, 1, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        EXPECT(rio.RIOReceive(rq, &in, 1, 0, (void *)11) == 1);
        PORTO_RIO_BUF in2 = {buf, 1024, 1024};
        EXPECT(rio.RIOReceive(rq, &in2, 1, 0, (void *)12) == 1);
        PORTO_RIO_BUF in3 = {buf, 3072, 1024};
        EXPECT(rio.RIOReceive(rq, &in3, 1, 0, (void *)13) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOBUFS); // 2 receives at most
        EXPECT(rio.RIOResizeRequestQueue(rq, 1, 2) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAETOOMANYREFS); // 2 are out
        EXPECT(rio.RIOResizeCompletionQueue(cq, 3) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAETOOMANYREFS); // its request queue may have 4 out
        EXPECT(rio.RIOResizeCompletionQueue(cq, PORTO_RIO_MAX_CQ_SIZE + 1) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        EXPECT(rio.RIOResizeRequestQueue(rq, 4, 4) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAENOBUFS); // 8 do not fit 4 entries
        EXPECT(rio.RIOResizeCompletionQueue(cq, 8) == 1);
        EXPECT(rio.RIOResizeRequestQueue(rq, 4, 4) == 1); // now they do
        EXPECT(rio.RIOReceive(rq, &in3, 1, 0, (void *)13) == 1); // a third receive
        EXPECT(rio.RIOResizeCompletionQueue(cq, 7) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAETOOMANYREFS);

        PORTO_RIORESULT res[4];
        EXPECT(rio.RIODequeueCompletion((PORTO_RIO_CQ)((uintptr_t)cq + 1000), res, 4) == PORTO_RIO_CORRUPT_CQ);
        EXPECT(rio.RIODequeueCompletion(cq, nullptr, 4) == PORTO_RIO_CORRUPT_CQ);
        EXPECT(rio.RIODequeueCompletion(cq, res, 4) == 0);
        // Closing the socket aborts the three receives, once each, and frees its request queue.
        EXPECT(porto_closesocket(r) == 0);
        uint32_t aborted = 0;
        for (int round = 0; round < 200 && aborted < 3; round++) {
            uint32_t k = rio.RIODequeueCompletion(cq, res, 4);
            for (uint32_t i = 0; i < k && k != PORTO_RIO_CORRUPT_CQ; i++)
                aborted += res[i].Status == PORTO_WSA_OPERATION_ABORTED && res[i].SocketContext == 5 &&
                           (res[i].RequestContext == 11 || res[i].RequestContext == 12 ||
                            res[i].RequestContext == 13);
            if (aborted < 3) {
                uint32_t nn = 0;
                porto_GetQueuedCompletionStatusEx(iocp, e, 4, &nn, 10, 0); // a 10 ms pause
            }
        }
        EXPECT(aborted == 3);
        EXPECT(rio.RIODequeueCompletion(cq, res, 4) == 0); // nothing more
        EXPECT(rio.RIOReceive(rq, &in, 1, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // the queue went with its socket
        rio.RIOCloseCompletionQueue(cq);
        EXPECT(rio.RIODequeueCompletion(cq, res, 4) == PORTO_RIO_CORRUPT_CQ);
        rio.RIODeregisterBuffer(buf);
        rio.RIODeregisterBuffer(buf);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
    }

    // Event objects, and a RIO completion queue notifying one (RIO_EVENT_COMPLETION).
    {
        PORTO_WSAEVENT ev = porto_WSACreateEvent(), other = porto_WSACreateEvent();
        EXPECT(ev != PORTO_WSA_INVALID_EVENT && other != PORTO_WSA_INVALID_EVENT);
        PORTO_WSAEVENT both[2] = {ev, other};
        EXPECT(porto_WSAWaitForMultipleEvents(2, both, 0, 0, 0) == PORTO_WSA_WAIT_TIMEOUT);
        EXPECT(porto_WSASetEvent(other) == 1);
        EXPECT(porto_WSAWaitForMultipleEvents(2, both, 0, 0, 0) == PORTO_WSA_WAIT_EVENT_0 + 1);
        EXPECT(porto_WSAWaitForMultipleEvents(2, both, 1, 10, 0) == PORTO_WSA_WAIT_TIMEOUT); // ev is not set
        EXPECT(porto_WSAWaitForMultipleEvents(0, both, 0, 0, 0) == PORTO_WSA_WAIT_FAILED);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_INVALID_PARAMETER);
        PORTO_WSAEVENT bad[1] = {iocp};
        EXPECT(porto_WSAWaitForMultipleEvents(1, bad, 0, 0, 0) == PORTO_WSA_WAIT_FAILED);
        EXPECT(porto_WSAGetLastError() == PORTO_WSA_INVALID_HANDLE); // a port is no event
        EXPECT(porto_WSAWaitForMultipleEvents(1, nullptr, 0, 0, 0) == PORTO_WSA_WAIT_FAILED);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        EXPECT(porto_WSAResetEvent(other) == 1);
        EXPECT(porto_WaitForSingleObject(other, 0) == (uint32_t)PORTO_WAIT_TIMEOUT);
        int fd = porto_WSAEventFd(ev);
        EXPECT(fd >= 0 && porto_WSAEventFd(iocp) == -1);

        PORTO_SOCKET r = porto_WSASocket(AF_INET6, SOCK_DGRAM, 0, nullptr, 0, PORTO_WSA_FLAG_REGISTERED_IO);
        sockaddr_in6 a6;
        std::memset(&a6, 0, sizeof a6);
        a6.sin6_family = AF_INET6;
        a6.sin6_addr = in6addr_loopback;
        EXPECT(porto_bind(r, reinterpret_cast<sockaddr *>(&a6), sizeof a6) == 0);
        int alen = sizeof a6;
        EXPECT(porto_getsockname(r, reinterpret_cast<sockaddr *>(&a6), &alen) == 0);
        PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
        PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
        uint32_t got = 0;
        EXPECT(porto_WSAIoctl(r, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, sizeof rio,
                              &got, nullptr, nullptr) == 0);
        static char mem[2048];
        PORTO_RIO_BUFFERID buf = rio.RIORegisterBuffer(mem, sizeof mem);
        PORTO_RIO_NOTIFICATION_COMPLETION n;
        std::memset(&n, 0, sizeof n);
        n.Type = PORTO_RIO_EVENT_COMPLETION;
        n.Event.EventHandle = iocp; // not an event
        EXPECT(rio.RIOCreateCompletionQueue(8, &n) == PORTO_RIO_INVALID_CQ);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);
        n.Event.EventHandle = ev;
        n.Event.NotifyReset = 1;
        PORTO_RIO_CQ cq = rio.RIOCreateCompletionQueue(8, &n);
        EXPECT(cq != PORTO_RIO_INVALID_CQ);
        PORTO_RIO_RQ rq = rio.RIOCreateRequestQueue(r, 2, 1, 2, 1, cq, cq, (void *)9);
        PORTO_RIO_BUF in = {buf, 0, 1024};
        EXPECT(rio.RIOReceive(rq, &in, 1, 0, (void *)21) == 1);
        EXPECT(porto_WSASetEvent(ev) == 1);
        EXPECT(rio.RIONotify(cq) == 0); // NotifyReset: the event is reset here
        EXPECT(porto_WaitForSingleObject(ev, 0) == (uint32_t)PORTO_WAIT_TIMEOUT);
        // A datagram from a plain kernel socket sets the event; its fd turns readable too.
        PORTO_SOCKET tx = porto_WSASocket(AF_INET6, SOCK_DGRAM, 0, nullptr, 0, 0);
        PORTO_HANDLE txp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
        EXPECT(porto_CreateIoCompletionPort((PORTO_HANDLE)tx, txp, 1, 0) == txp);
        char hello[] = "event";
        PORTO_WSABUF hb = {5, hello};
        PORTO_OVERLAPPED sov;
        std::memset(&sov, 0, sizeof sov);
        uint32_t sent = 0;
        int rc = porto_WSASendTo(tx, &hb, 1, &sent, 0, reinterpret_cast<sockaddr *>(&a6), sizeof a6, &sov, nullptr);
        EXPECT(rc == 0 || porto_WSAGetLastError() == PORTO_WSA_IO_PENDING);
        EXPECT(porto_WSAWaitForMultipleEvents(1, &ev, 0, 5000, 0) == PORTO_WSA_WAIT_EVENT_0);
        pollfd pf = {fd, POLLIN, 0};
        EXPECT(poll(&pf, 1, 0) == 1);
        PORTO_RIORESULT res[2];
        EXPECT(rio.RIODequeueCompletion(cq, res, 2) == 1);
        EXPECT(res[0].Status == 0 && res[0].BytesTransferred == 5 && res[0].RequestContext == 21 &&
               res[0].SocketContext == 9 && std::memcmp(mem, "event", 5) == 0);
        EXPECT(rio.RIONotify(cq) == 0); // resets it again; nothing is queued
        EXPECT(porto_WaitForSingleObject(ev, 20) == (uint32_t)PORTO_WAIT_TIMEOUT);
        EXPECT(porto_closesocket(tx) == 0 && porto_CloseHandle(txp) == 1);
        EXPECT(porto_closesocket(r) == 0);
        rio.RIOCloseCompletionQueue(cq);
        rio.RIODeregisterBuffer(buf);
        EXPECT(porto_WSACloseEvent(ev) == 1 && porto_CloseHandle(other) == 1);
        EXPECT(porto_WSACloseEvent(ev) == 0 && porto_WSAGetLastError() == PORTO_WSA_INVALID_HANDLE);
    }

    // RIOReceiveEx / RIOSendEx with every buffer, on a socket bound to 0.0.0.0 as a
    // multi-homed server is: the address each datagram was sent to, the kernel's control
    // messages, the flags; a reply from a chosen source address.
    {
        PORTO_SOCKET r = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, PORTO_WSA_FLAG_REGISTERED_IO);
        sockaddr_in any4;
        std::memset(&any4, 0, sizeof any4);
        any4.sin_family = AF_INET;
        EXPECT(porto_bind(r, reinterpret_cast<sockaddr *>(&any4), sizeof any4) == 0);
        int alen = sizeof any4;
        EXPECT(porto_getsockname(r, reinterpret_cast<sockaddr *>(&any4), &alen) == 0);
        PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
        PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
        uint32_t got = 0;
        EXPECT(porto_WSAIoctl(r, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, sizeof rio,
                              &got, nullptr, nullptr) == 0);
        // One registered block: data, control, local, remote, flags.
        static char mem[4096];
        std::memset(mem, 0x55, sizeof mem); // stale bytes the control area must not show
        PORTO_RIO_BUFFERID buf = rio.RIORegisterBuffer(mem, sizeof mem);
        PORTO_RIO_CQ cq = rio.RIOCreateCompletionQueue(8, nullptr);
        PORTO_RIO_RQ rq = rio.RIOCreateRequestQueue(r, 2, 1, 2, 1, cq, cq, (void *)4);
        PORTO_RIO_BUF data = {buf, 0, 1024}, ctl = {buf, 1024, 512}, loc = {buf, 2048, sizeof(PORTO_SOCKADDR_INET)},
                      rem = {buf, 2304, sizeof(PORTO_SOCKADDR_INET)}, fl = {buf, 2560, 4};
        EXPECT(rio.RIOReceiveEx(rq, &data, 1, &loc, &rem, &ctl, &fl, 0, (void *)31) == 1);
        int peer = socket(AF_INET, SOCK_DGRAM, 0);
        sockaddr_in pa;
        std::memset(&pa, 0, sizeof pa);
        pa.sin_family = AF_INET;
        pa.sin_addr.s_addr = htonl(0x7F000001); // 127.0.0.1
        EXPECT(bind(peer, reinterpret_cast<sockaddr *>(&pa), sizeof pa) == 0);
        socklen_t pl = sizeof pa;
        getsockname(peer, reinterpret_cast<sockaddr *>(&pa), &pl);
        sockaddr_in to = any4;
        to.sin_addr.s_addr = htonl(0x7F000003); // sent to 127.0.0.3
        EXPECT(sendto(peer, "multi", 5, 0, reinterpret_cast<sockaddr *>(&to), sizeof to) == 5);
        PORTO_RIORESULT res[2];
        uint32_t k = 0;
        for (int round = 0; round < 500 && k == 0; round++) {
            k = rio.RIODequeueCompletion(cq, res, 2);
            if (k == 0)
                poll(nullptr, 0, 10);
        }
        EXPECT(k == 1 && res[0].Status == 0 && res[0].BytesTransferred == 5 && res[0].RequestContext == 31);
        PORTO_SOCKADDR_INET lsa, rsa;
        std::memcpy(&lsa, mem + 2048, sizeof lsa);
        std::memcpy(&rsa, mem + 2304, sizeof rsa);
        EXPECT(lsa.Ipv4.sin_family == AF_INET && lsa.Ipv4.sin_addr.s_addr == htonl(0x7F000003) &&
               lsa.Ipv4.sin_port == any4.sin_port); // the address it was sent to, with our port
        EXPECT(rsa.Ipv4.sin_addr.s_addr == pa.sin_addr.s_addr && rsa.Ipv4.sin_port == pa.sin_port);
        uint32_t fbits = 0xFFFF;
        std::memcpy(&fbits, mem + 2560, 4);
        EXPECT(fbits == 0); // unicast, control whole
        msghdr mh;
        std::memset(&mh, 0, sizeof mh);
        mh.msg_control = mem + 1024;
        mh.msg_controllen = 512;
        int pktinfos = 0, headers = 0;
        for (cmsghdr *c = CMSG_FIRSTHDR(&mh); c != nullptr && c->cmsg_len != 0; c = CMSG_NXTHDR(&mh, c)) {
            headers++;
            if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
                in_pktinfo pi;
                std::memcpy(&pi, CMSG_DATA(c), sizeof pi);
                pktinfos += pi.ipi_addr.s_addr == htonl(0x7F000003);
            }
        }
        EXPECT(pktinfos == 1 && headers == 1); // the walk stops after the kernel's message

        // A reply from 127.0.0.2 (pLocalAddress).
        PORTO_SOCKADDR_INET src;
        std::memset(&src, 0, sizeof src);
        src.Ipv4.sin_family = AF_INET;
        src.Ipv4.sin_addr.s_addr = htonl(0x7F000002);
        std::memcpy(mem + 2048, &src, sizeof src);
        std::memcpy(mem + 2304, &rsa, sizeof rsa);
        std::memcpy(mem, "reply", 5);
        PORTO_RIO_BUF out = {buf, 0, 5};
        EXPECT(rio.RIOSendEx(rq, &out, 1, &loc, &rem, &ctl, nullptr, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // source both ways
        uint32_t one = 1;
        std::memcpy(mem + 2560, &one, 4);
        EXPECT(rio.RIOSendEx(rq, &out, 1, &loc, &rem, nullptr, &fl, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP); // no send flags
        EXPECT(rio.RIOSendEx(rq, &out, 1, &loc, &rem, nullptr, nullptr, 0, (void *)32) == 1);
        char back[16];
        sockaddr_in from;
        socklen_t fromlen = sizeof from;
        timeval tv = {5, 0};
        setsockopt(peer, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ssize_t n = recvfrom(peer, back, sizeof back, 0, reinterpret_cast<sockaddr *>(&from), &fromlen);
        EXPECT(n == 5 && std::memcmp(back, "reply", 5) == 0 && from.sin_addr.s_addr == htonl(0x7F000002) &&
               from.sin_port == any4.sin_port);
        k = 0;
        for (int round = 0; round < 500 && k == 0; round++) {
            k = rio.RIODequeueCompletion(cq, res, 2);
            if (k == 0)
                poll(nullptr, 0, 10);
        }
        EXPECT(k == 1 && res[0].Status == 0 && res[0].RequestContext == 32);
        PORTO_RIO_BUF tiny_flags = {buf, 2560, 2};
        EXPECT(rio.RIOReceiveEx(rq, &data, 1, nullptr, nullptr, nullptr, &tiny_flags, 0, nullptr) == 0);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
        close(peer);
        EXPECT(porto_closesocket(r) == 0);
        rio.RIOCloseCompletionQueue(cq);
        rio.RIODeregisterBuffer(buf);
    }

    // BSD-style blocking calls beside the overlapped ones: timeouts, non-blocking mode,
    // FIONREAD, WSAEMSGSIZE, WSAPoll, select, a TCP connect/accept/send/recv, and a blocked
    // recvfrom ended by closesocket on another thread.
    {
        PORTO_SOCKET u1 = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        PORTO_SOCKET u2 = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
        char buf[64];
        EXPECT(porto_recvfrom(u1, buf, sizeof buf, 0, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL); // not bound
        sockaddr_in a1;
        std::memset(&a1, 0, sizeof a1);
        a1.sin_family = AF_INET;
        a1.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        EXPECT(porto_bind(u1, reinterpret_cast<sockaddr *>(&a1), sizeof a1) == 0);
        int al = sizeof a1;
        EXPECT(porto_getsockname(u1, reinterpret_cast<sockaddr *>(&a1), &al) == 0);
        uint32_t ms = 100;
        EXPECT(porto_setsockopt(u1, SOL_SOCKET, SO_RCVTIMEO, &ms, sizeof ms) == 0);
        uint32_t got_ms = 0;
        int gl = sizeof got_ms;
        EXPECT(porto_getsockopt(u1, SOL_SOCKET, SO_RCVTIMEO, &got_ms, &gl) == 0 && got_ms == 100);
        EXPECT(porto_recvfrom(u1, buf, sizeof buf, 0, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAETIMEDOUT);
        uint32_t on = 1, off = 0, avail = 99;
        EXPECT(porto_ioctlsocket(u1, PORTO_FIONBIO, &on) == 0);
        EXPECT(porto_recvfrom(u1, buf, sizeof buf, 0, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEWOULDBLOCK);
        EXPECT(porto_ioctlsocket(u1, PORTO_FIONBIO, &off) == 0);
        EXPECT(porto_ioctlsocket(u1, PORTO_FIONREAD, &avail) == 0 && avail == 0);
        PORTO_WSAPOLLFD pf[2] = {{u1, PORTO_POLLRDNORM, 0}, {u1 + 5000, PORTO_POLLRDNORM, 0}};
        EXPECT(porto_WSAPoll(pf, 1, 0) == 0 && pf[0].revents == 0);
        EXPECT(porto_sendto(u2, "blocking", 8, 0, reinterpret_cast<sockaddr *>(&a1), sizeof a1) == 8); // binds u2
        EXPECT(porto_WSAPoll(pf, 1, 5000) == 1 && (pf[0].revents & PORTO_POLLRDNORM));
        EXPECT(porto_WSAPoll(pf, 2, 0) == 2 && pf[1].revents == PORTO_POLLNVAL);
        PORTO_FD_SET rs;
        PORTO_FD_ZERO(&rs);
        PORTO_FD_SET(u1, &rs);
        PORTO_FD_SET(u1, &rs); // once only
        PORTO_TIMEVAL tv = {5, 0};
        EXPECT(rs.fd_count == 1 && porto_select(0, &rs, nullptr, nullptr, &tv) == 1 && PORTO_FD_ISSET(u1, &rs));
        EXPECT(porto_ioctlsocket(u1, PORTO_FIONREAD, &avail) == 0 && avail == 8);
        sockaddr_in from;
        int fl = sizeof from;
        EXPECT(porto_recvfrom(u1, buf, sizeof buf, 0, reinterpret_cast<sockaddr *>(&from), &fl) == 8 &&
               std::memcmp(buf, "blocking", 8) == 0);
        sockaddr_in a2;
        int a2l = sizeof a2;
        EXPECT(porto_getsockname(u2, reinterpret_cast<sockaddr *>(&a2), &a2l) == 0 && from.sin_port == a2.sin_port);
        PORTO_TIMEVAL quick = {0, 20000};
        PORTO_FD_ZERO(&rs);
        PORTO_FD_SET(u1, &rs);
        EXPECT(porto_select(0, &rs, nullptr, nullptr, &quick) == 0 && rs.fd_count == 0); // nothing waits
        EXPECT(porto_sendto(u2, "0123456789", 10, 0, reinterpret_cast<sockaddr *>(&a1), sizeof a1) == 10);
        EXPECT(porto_recvfrom(u1, buf, 4, 0, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEMSGSIZE && std::memcmp(buf, "0123", 4) == 0);
        EXPECT(porto_recv(u1, buf, sizeof buf, MSG_PEEK) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEOPNOTSUPP);
        // closesocket on another thread ends a blocked recvfrom (no timeout) with WSAEINTR.
        ms = 0;
        EXPECT(porto_setsockopt(u1, SOL_SOCKET, SO_RCVTIMEO, &ms, sizeof ms) == 0);
        std::thread closer([u1] {
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
            porto_closesocket(u1);
        });
        EXPECT(porto_recvfrom(u1, buf, sizeof buf, 0, nullptr, nullptr) == PORTO_SOCKET_ERROR);
        EXPECT(porto_WSAGetLastError() == PORTO_WSAEINTR);
        closer.join();
        EXPECT(porto_closesocket(u2) == 0);

        // TCP: listen, connect, accept, send, recv, the peer's close.
        PORTO_SOCKET l = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        sockaddr_in6 la;
        std::memset(&la, 0, sizeof la);
        la.sin6_family = AF_INET6;
        la.sin6_addr = in6addr_loopback;
        EXPECT(porto_bind(l, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        int lal = sizeof la;
        EXPECT(porto_getsockname(l, reinterpret_cast<sockaddr *>(&la), &lal) == 0);
        EXPECT(porto_listen(l, 8) == 0);
        PORTO_SOCKET c = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        EXPECT(porto_send(c, "x", 1, 0) == PORTO_SOCKET_ERROR && porto_WSAGetLastError() == PORTO_WSAENOTCONN);
        EXPECT(porto_connect(c, reinterpret_cast<sockaddr *>(&la), sizeof la) == 0);
        EXPECT(porto_connect(c, reinterpret_cast<sockaddr *>(&la), sizeof la) == PORTO_SOCKET_ERROR &&
               porto_WSAGetLastError() == PORTO_WSAEISCONN);
        PORTO_WSAPOLLFD lp = {l, PORTO_POLLRDNORM, 0};
        EXPECT(porto_WSAPoll(&lp, 1, 5000) == 1 && (lp.revents & PORTO_POLLRDNORM)); // a connection waits
        sockaddr_in6 peer;
        int pl = sizeof peer;
        PORTO_SOCKET a = porto_accept(l, reinterpret_cast<sockaddr *>(&peer), &pl);
        EXPECT(a != PORTO_INVALID_SOCKET && pl == sizeof peer && peer.sin6_family == AF_INET6);
        EXPECT(porto_send(c, "hello tcp", 9, 0) == 9);
        int n = 0;
        while (n < 9) {
            int k = porto_recv(a, buf + n, sizeof buf - n, 0);
            if (k <= 0)
                break;
            n += k;
        }
        EXPECT(n == 9 && std::memcmp(buf, "hello tcp", 9) == 0);
        // A blocking send far larger than the socket buffers, read late: it waits (in
        // slices) and every byte arrives once, in order.
        static std::vector<unsigned char> big(32u << 20);
        for (size_t i = 0; i < big.size(); i++)
            big[i] = (unsigned char)(i * 7 + i / 251);
        bool same = true;
        size_t read_total = 0;
        std::thread reader([a, &same, &read_total] {
            std::this_thread::sleep_for(std::chrono::milliseconds(200));
            static char chunk[65536];
            while (read_total < big.size()) {
                int k = porto_recv(a, chunk, sizeof chunk, 0);
                if (k <= 0)
                    break;
                same = same && std::memcmp(chunk, &big[read_total], (size_t)k) == 0;
                read_total += (size_t)k;
            }
        });
        EXPECT(porto_send(c, reinterpret_cast<const char *>(big.data()), (int)big.size(), 0) == (int)big.size());
        reader.join();
        EXPECT(read_total == big.size() && same);
        EXPECT(porto_closesocket(c) == 0);
        EXPECT(porto_recv(a, buf, sizeof buf, 0) == 0); // the peer closed
        ms = 50;
        EXPECT(porto_setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &ms, sizeof ms) == 0);
        EXPECT(porto_accept(l, nullptr, nullptr) == PORTO_INVALID_SOCKET && porto_WSAGetLastError() == PORTO_WSAETIMEDOUT);
        EXPECT(porto_closesocket(a) == 0 && porto_closesocket(l) == 0);
        // A port bound but not listening refuses.
        PORTO_SOCKET idle = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        sockaddr_in6 ia = la;
        ia.sin6_port = 0;
        EXPECT(porto_bind(idle, reinterpret_cast<sockaddr *>(&ia), sizeof ia) == 0);
        int ial = sizeof ia;
        EXPECT(porto_getsockname(idle, reinterpret_cast<sockaddr *>(&ia), &ial) == 0);
        PORTO_SOCKET r = porto_WSASocket(AF_INET6, SOCK_STREAM, 0, nullptr, 0, 0);
        EXPECT(porto_connect(r, reinterpret_cast<sockaddr *>(&ia), sizeof ia) == PORTO_SOCKET_ERROR &&
               porto_WSAGetLastError() == PORTO_WSAECONNREFUSED);
        EXPECT(porto_closesocket(r) == 0 && porto_closesocket(idle) == 0);
    }

    EXPECT(porto_CloseHandle(iocp) == 1);
    EXPECT(porto_CloseHandle(iocp) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);
    EXPECT(porto_WSACleanup() == 0);
    EXPECT(porto_WSACleanup() == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSANOTINITIALISED);
    if (failures == 0)
        std::printf("boundary_check: all checks passed\n");
    return failures == 0 ? 0 : 1;
}
