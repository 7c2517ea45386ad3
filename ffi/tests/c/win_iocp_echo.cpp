// A Windows IOCP echo server in the shape of Microsoft's iocpserverex sample, written with
// Windows' own names only — WSAStartup, WSASocket, AcceptEx fetched through WSAIoctl,
// CreateIoCompletionPort((HANDLE)sock, ...), GetQueuedCompletionStatus, WSARecv/WSASend of
// whatever arrived, CloseHandle on the port to stop the workers — against
// "porto_winsock.h" instead of <winsock2.h> and <mswsock.h>. The only lines a Linux build
// needs beside the include are the worker threads (std::thread for CreateThread).
//
// usage: win_iocp_echo PORT SECONDS
#include "porto_winsock.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#define BUF_SIZE 8192
#define ADDR_SIZE (sizeof(SOCKADDR_IN) + 16)

enum IO_OP { OP_ACCEPT, OP_READ, OP_WRITE };

typedef struct {
    WSAOVERLAPPED Overlapped;
    IO_OP Op;
    SOCKET Socket;
    WSABUF wsabuf;
    char Buffer[BUF_SIZE + 2 * ADDR_SIZE];
} IO_CONTEXT, *LPIO_CONTEXT;

static SOCKET g_listen = INVALID_SOCKET;
static HANDLE g_iocp = NULL;
static LPFN_ACCEPTEX g_AcceptEx = NULL;
static std::atomic<int> g_connections{0};

static BOOL post_accept(LPIO_CONTEXT ctx) {
    memset(&ctx->Overlapped, 0, sizeof(ctx->Overlapped));
    ctx->Op = OP_ACCEPT;
    ctx->Socket = WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    if (ctx->Socket == INVALID_SOCKET)
        return FALSE;
    DWORD bytes = 0;
    if (!g_AcceptEx(g_listen, ctx->Socket, ctx->Buffer, 0, ADDR_SIZE, ADDR_SIZE, &bytes, &ctx->Overlapped) &&
        WSAGetLastError() != ERROR_IO_PENDING) {
        std::fprintf(stderr, "AcceptEx failed: %d\n", WSAGetLastError());
        return FALSE;
    }
    return TRUE;
}

static BOOL post_recv(LPIO_CONTEXT ctx) {
    memset(&ctx->Overlapped, 0, sizeof(ctx->Overlapped));
    ctx->Op = OP_READ;
    ctx->wsabuf.buf = ctx->Buffer;
    ctx->wsabuf.len = BUF_SIZE;
    DWORD flags = 0, bytes = 0;
    if (WSARecv(ctx->Socket, &ctx->wsabuf, 1, &bytes, &flags, &ctx->Overlapped, NULL) == SOCKET_ERROR &&
        WSAGetLastError() != WSA_IO_PENDING)
        return FALSE;
    return TRUE;
}

static void worker() {
    for (;;) {
        DWORD bytes = 0;
        ULONG_PTR key = 0;
        LPOVERLAPPED ov = NULL;
        BOOL ok = GetQueuedCompletionStatus(g_iocp, &bytes, &key, &ov, INFINITE);
        if (!ok && ov == NULL) {
            // The port was closed (ERROR_ABANDONED_WAIT_0): the server is stopping.
            if (GetLastError() != ERROR_ABANDONED_WAIT_0)
                std::fprintf(stderr, "GetQueuedCompletionStatus: %d\n", GetLastError());
            return;
        }
        LPIO_CONTEXT ctx = (LPIO_CONTEXT)ov;
        switch (ctx->Op) {
        case OP_ACCEPT: {
            LPIO_CONTEXT next = (LPIO_CONTEXT)calloc(1, sizeof(IO_CONTEXT));
            post_accept(next);
            if (!ok)
                break;
            setsockopt(ctx->Socket, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT, (char *)&g_listen, sizeof(g_listen));
            if (CreateIoCompletionPort((HANDLE)ctx->Socket, g_iocp, (ULONG_PTR)ctx->Socket, 0) != g_iocp) {
                std::fprintf(stderr, "CreateIoCompletionPort: %d\n", GetLastError());
                break;
            }
            g_connections++;
            post_recv(ctx);
            break;
        }
        case OP_READ:
            if (!ok || bytes == 0) {
                closesocket(ctx->Socket);
                free(ctx);
                break;
            }
            // Echo what arrived, as it arrived (Microsoft's sample does the same).
            memset(&ctx->Overlapped, 0, sizeof(ctx->Overlapped));
            ctx->Op = OP_WRITE;
            ctx->wsabuf.len = bytes;
            if (WSASend(ctx->Socket, &ctx->wsabuf, 1, &bytes, 0, &ctx->Overlapped, NULL) == SOCKET_ERROR &&
                WSAGetLastError() != WSA_IO_PENDING) {
                closesocket(ctx->Socket);
                free(ctx);
            }
            break;
        case OP_WRITE:
            if (!ok || !post_recv(ctx)) {
                closesocket(ctx->Socket);
                free(ctx);
            }
            break;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 3) {
        std::fprintf(stderr, "usage: %s PORT SECONDS\n", argv[0]);
        return 2;
    }
    WSADATA wsaData;
    if (WSAStartup(MAKEWORD(2, 2), &wsaData) != 0)
        return 1;
    g_iocp = CreateIoCompletionPort(INVALID_HANDLE_VALUE, NULL, 0, 0);
    if (g_iocp == NULL)
        return 1;
    g_listen = WSASocket(AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, WSA_FLAG_OVERLAPPED);
    SOCKADDR_IN addr;
    memset(&addr, 0, sizeof(addr));
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[1]));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(g_listen, (SOCKADDR *)&addr, sizeof(addr)) == SOCKET_ERROR || listen(g_listen, SOMAXCONN) == SOCKET_ERROR) {
        std::fprintf(stderr, "bind/listen: %d\n", WSAGetLastError());
        return 1;
    }
    if (CreateIoCompletionPort((HANDLE)g_listen, g_iocp, 0, 0) != g_iocp)
        return 1;
    GUID guid = WSAID_ACCEPTEX;
    DWORD got = 0;
    if (WSAIoctl(g_listen, SIO_GET_EXTENSION_FUNCTION_POINTER, &guid, sizeof(guid), &g_AcceptEx, sizeof(g_AcceptEx),
                 &got, NULL, NULL) == SOCKET_ERROR)
        return 1;
    LPIO_CONTEXT first = (LPIO_CONTEXT)calloc(1, sizeof(IO_CONTEXT));
    if (!post_accept(first))
        return 1;
    std::vector<std::thread> workers;
    for (int i = 0; i < 2; i++)
        workers.emplace_back(worker);
    std::printf("listening on %s\n", argv[1]);
    std::fflush(stdout);
    std::this_thread::sleep_for(std::chrono::milliseconds((long)(atof(argv[2]) * 1000)));
    // Stop: closing the port ends every worker's wait.
    CloseHandle(g_iocp);
    for (auto &w : workers)
        w.join();
    closesocket(g_listen);
    std::printf("stopped after %d connection(s)\n", g_connections.load());
    // Like most Windows servers, no WSACleanup: nothing may be left behind all the same.
    return 0;
}
