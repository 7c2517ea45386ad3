/* An IOCP UDP echo server for sockperf, written the way a Windows Winsock server is, with
 * porto's prefix: WSAStartup, WSASocket, bind, CreateIoCompletionPort, receives posted ahead
 * with WSARecvFrom, a GetQueuedCompletionStatusEx loop that answers each request with
 * WSASendTo and posts the receive again, and at the end closesocket (the receives still
 * posted complete WSA_OPERATION_ABORTED, each once), CloseHandle, WSACleanup.
 *
 *   iocp_udp_echo PORT [SECONDS] [-6]     (SECONDS 0 or absent: until SIGINT/SIGTERM)
 */
#include "porto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RECEIVES 64
#define SENDS 256
#define BUF_SIZE 2048
#define ENTRIES 64

typedef struct {
    PORTO_OVERLAPPED ov; /* first: the OVERLAPPED pointer is the context (CONTAINING_RECORD) */
    int is_recv;
    PORTO_WSABUF wsabuf;
    struct sockaddr_storage from;
    int32_t fromlen;
    unsigned char data[BUF_SIZE];
} IO_CONTEXT;

static volatile sig_atomic_t stop;

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int post_recv(PORTO_SOCKET s, IO_CONTEXT *io) {
    uint32_t flags = 0;
    memset(&io->ov, 0, sizeof io->ov);
    io->is_recv = 1;
    io->wsabuf.buf = (char *)io->data;
    io->wsabuf.len = BUF_SIZE;
    io->fromlen = (int32_t)sizeof io->from;
    if (porto_WSARecvFrom(s, &io->wsabuf, 1, NULL, &flags, (struct sockaddr *)&io->from, &io->fromlen, &io->ov,
                          NULL) == PORTO_SOCKET_ERROR &&
        porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
        fprintf(stderr, "iocp_udp_echo: WSARecvFrom failed: %d\n", porto_WSAGetLastError());
        return -1;
    }
    return 0;
}

/* sockperf's header: seq (8), flags (2, big-endian; 1 = from a client, 2 = pong requested). */
static int make_reply(unsigned char *m, uint32_t len) {
    if (len < 14 || !(m[9] & 2))
        return 0;
    m[9] &= (unsigned char)~1u;
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SECONDS] [-6]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = argc > 2 ? atof(argv[2]) : 0;
    int v6 = argc > 3 && strcmp(argv[3], "-6") == 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int err = porto_WSAStartup(0x0202, NULL);
    if (err != 0) {
        fprintf(stderr, "iocp_udp_echo: WSAStartup failed: %d\n", err);
        return 1;
    }
    PORTO_SOCKET s = porto_WSASocket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0, 0);
    if (s == PORTO_INVALID_SOCKET) {
        fprintf(stderr, "iocp_udp_echo: WSASocket failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    struct sockaddr_storage addr;
    int32_t addrlen;
    memset(&addr, 0, sizeof addr);
    if (v6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&addr;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons((uint16_t)port);
        a->sin6_addr = in6addr_loopback;
        addrlen = (int32_t)sizeof *a;
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&addr;
        a->sin_family = AF_INET;
        a->sin_port = htons((uint16_t)port);
        a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        addrlen = (int32_t)sizeof *a;
    }
    if (porto_bind(s, (struct sockaddr *)&addr, addrlen) == PORTO_SOCKET_ERROR) {
        fprintf(stderr, "iocp_udp_echo: bind failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
    if (iocp == 0 || porto_CreateIoCompletionPort((PORTO_HANDLE)s, iocp, 1, 0) != iocp) {
        fprintf(stderr, "iocp_udp_echo: CreateIoCompletionPort failed: %d\n", porto_WSAGetLastError());
        return 1;
    }

    static IO_CONTEXT recvs[RECEIVES], sends[SENDS];
    IO_CONTEXT *free_sends[SENDS];
    int nfree = 0;
    for (int i = 0; i < SENDS; i++)
        free_sends[nfree++] = &sends[i];
    for (int i = 0; i < RECEIVES; i++)
        if (post_recv(s, &recvs[i]) != 0)
            return 1;
    printf("iocp_udp_echo: listening on %s port %d\n", v6 ? "[::1]" : "127.0.0.1", port);
    fflush(stdout);

    unsigned long long requests = 0, replies = 0, dropped_replies = 0, failed = 0, aborted = 0;
    int outstanding = RECEIVES;
    double end = seconds > 0 ? now_s() + seconds : 0;
    PORTO_OVERLAPPED_ENTRY entries[ENTRIES];
    for (;;) {
        int closing = stop || (end > 0 && now_s() >= end);
        if (closing && s != PORTO_INVALID_SOCKET) {
            /* The posted receives complete WSA_OPERATION_ABORTED, each once. */
            porto_closesocket(s);
            s = PORTO_INVALID_SOCKET;
        }
        if (s == PORTO_INVALID_SOCKET && outstanding == 0 && nfree == SENDS)
            break;
        uint32_t n = 0;
        if (!porto_GetQueuedCompletionStatusEx(iocp, entries, ENTRIES, &n, 100, 0)) {
            if (porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT)
                continue;
            fprintf(stderr, "iocp_udp_echo: GetQueuedCompletionStatusEx failed: %d\n", porto_WSAGetLastError());
            return 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            IO_CONTEXT *io = (IO_CONTEXT *)entries[i].lpOverlapped;
            uint32_t bytes = entries[i].dwNumberOfBytesTransferred;
            if (!io->is_recv) {
                if (entries[i].Internal != 0) {
                    if (failed++ == 0)
                        fprintf(stderr, "iocp_udp_echo: first failed send: %llu\n", (unsigned long long)entries[i].Internal);
                }
                free_sends[nfree++] = io;
                continue;
            }
            outstanding--;
            if (entries[i].Internal == PORTO_WSA_OPERATION_ABORTED) {
                aborted++;
                continue;
            }
            if (entries[i].Internal != 0) {
                if (failed++ == 0)
                    fprintf(stderr, "iocp_udp_echo: first failed receive: %llu\n", (unsigned long long)entries[i].Internal);
            } else {
                requests++;
                if (make_reply(io->data, bytes)) {
                    if (nfree == 0 || s == PORTO_INVALID_SOCKET) {
                        dropped_replies++;
                    } else {
                        IO_CONTEXT *tx = free_sends[--nfree];
                        memset(&tx->ov, 0, sizeof tx->ov);
                        tx->is_recv = 0;
                        PORTO_WSABUF b = {bytes, (char *)io->data};
                        if (porto_WSASendTo(s, &b, 1, NULL, 0, (struct sockaddr *)&io->from, io->fromlen, &tx->ov,
                                            NULL) == PORTO_SOCKET_ERROR &&
                            porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
                            dropped_replies++;
                            free_sends[nfree++] = tx;
                        } else {
                            replies++;
                        }
                    }
                }
            }
            if (s != PORTO_INVALID_SOCKET) {
                if (post_recv(s, io) != 0)
                    return 1;
                outstanding++;
            }
        }
    }
    porto_CloseHandle(iocp);
    porto_WSACleanup();
    printf("iocp_udp_echo: stopped; %llu requests, %llu replies, %llu replies dropped, %llu failed, %llu receives "
           "aborted at close\n",
           requests, replies, dropped_replies, failed, aborted);
    return 0;
}
