// Compiles porto.h as C++ (-Wall -Wextra -Werror) and checks the boundary from the caller's
// side: bad handles, NULL pointers and a timeout each fail with Windows' error number, and
// a posted completion comes back with its key, byte count and OVERLAPPED.
#include "porto.h"

#include <netinet/in.h>
#include <cstdio>
#include <cstring>

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
    EXPECT(porto_WSAStartup(0x0202, nullptr) == 0);

    PORTO_SOCKET s = porto_WSASocket(AF_INET, SOCK_DGRAM, 0, nullptr, 0, 0);
    EXPECT(s != PORTO_INVALID_SOCKET);
    EXPECT(porto_WSASocket(AF_INET, SOCK_STREAM, 0, nullptr, 0, 0) == PORTO_INVALID_SOCKET);
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
    unsigned char data[64];
    PORTO_WSABUF b = {sizeof data, data};
    uint32_t flags = 0;
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, &ov, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEINVAL);

    PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
    EXPECT(iocp != 0);
    EXPECT(porto_CreateIoCompletionPort(s, iocp, 7, 0) == iocp);
    EXPECT(porto_CreateIoCompletionPort(s, iocp, 7, 0) == 0); // once only
    EXPECT(porto_WSARecvFrom(s, &b, 1, nullptr, &flags, nullptr, nullptr, nullptr, nullptr) == PORTO_SOCKET_ERROR);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);

    PORTO_OVERLAPPED_ENTRY e[4];
    uint32_t n = 99;
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, nullptr, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_WSAEFAULT);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp + 1000, e, 4, &n, 10, 0) == 0);
    EXPECT(porto_WSAGetLastError() == PORTO_ERROR_INVALID_HANDLE);

    // PostQueuedCompletionStatus round trip.
    EXPECT(porto_PostQueuedCompletionStatus(iocp, 42, 9, &ov) == 1);
    EXPECT(porto_GetQueuedCompletionStatusEx(iocp, e, 4, &n, 1000, 0) == 1);
    EXPECT(n == 1 && e[0].lpCompletionKey == 9 && e[0].dwNumberOfBytesTransferred == 42 && e[0].lpOverlapped == &ov &&
           e[0].Internal == 0);

    // CancelIoEx(s, NULL): every posted operation ends aborted, once; the socket stays usable.
    PORTO_OVERLAPPED ov2;
    std::memset(&ov2, 0, sizeof ov2);
    unsigned char data2[64];
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
