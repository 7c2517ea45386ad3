/* An IOCP TCP echo server for sockperf (--tcp), written the way a Windows Winsock server is,
 * with porto's prefix: WSASocket, bind, listen, CreateIoCompletionPort, AcceptEx fetched with
 * WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) and posted ahead with fresh sockets, each
 * reading the connection's first data in the same operation; GetAcceptExSockaddrs,
 * setsockopt(SO_UPDATE_ACCEPT_CONTEXT), the accepted socket associated with the port, then
 * WSARecv / WSASend per connection (sockperf's messages answered whole, in order). When a
 * client closes, DisconnectEx(TF_REUSE_SOCKET) and the socket goes to AcceptEx again.
 * At the end closesocket on the listener: the accepts still posted complete
 * WSA_OPERATION_ABORTED, each once.
 *
 *   iocp_tcp_echo PORT [SECONDS] [-6]     (SECONDS 0 or absent: until SIGINT/SIGTERM)
 */
#include "porto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ACCEPTS 8
#define ADDR_AREA (sizeof(struct sockaddr_in6) + 16)
#define BUF_SIZE 4096
#define LISTEN_KEY 1

typedef enum { OP_ACCEPT, OP_RECV, OP_SEND, OP_DISCONNECT } OP;

typedef struct CONN CONN;

typedef struct {
    PORTO_OVERLAPPED ov; /* first: the OVERLAPPED pointer is the context */
    OP op;
    CONN *conn;
    unsigned char data[BUF_SIZE];
} IO;

struct CONN {
    CONN *prev, *next; /* every CONN, to close them at the end */
    PORTO_SOCKET s;
    int associated;
    int closing;
    int outstanding; /* operations not yet dequeued */
    IO accept, recv, disconnect;
    unsigned char acc[BUF_SIZE + 2 * ADDR_AREA]; /* AcceptEx: first data, then addresses */
    unsigned char pending[2 * BUF_SIZE];       /* bytes of an incomplete message */
    size_t npending;
};

static volatile sig_atomic_t stop;
static PORTO_LPFN_ACCEPTEX AcceptEx_;
static PORTO_LPFN_DISCONNECTEX DisconnectEx_;
static PORTO_LPFN_GETACCEPTEXSOCKADDRS GetAcceptExSockaddrs_;
static PORTO_SOCKET listener = PORTO_INVALID_SOCKET;
static PORTO_HANDLE iocp;
static int v6;
static unsigned long long accepted, requests, replies, failed, accepts_aborted, reused;
static CONN *conns;
static int live; /* CONNs allocated */

static void on_signal(int sig) {
    (void)sig;
    stop = 1;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int get_fn(PORTO_SOCKET s, const PORTO_GUID *id, void *fn, size_t size) {
    PORTO_GUID g = *id;
    uint32_t got = 0;
    return porto_WSAIoctl(s, PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER, &g, sizeof g, fn, (uint32_t)size, &got, NULL,
                          NULL);
}

/* Posts an AcceptEx into `c` (its socket fresh, or reused after DisconnectEx). */
static int post_accept(CONN *c) {
    memset(&c->accept.ov, 0, sizeof c->accept.ov);
    c->accept.op = OP_ACCEPT;
    c->accept.conn = c;
    c->npending = 0;
    c->closing = 0;
    if (!AcceptEx_(listener, c->s, c->acc, BUF_SIZE, ADDR_AREA, ADDR_AREA, NULL, &c->accept.ov) &&
        porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
        fprintf(stderr, "iocp_tcp_echo: AcceptEx failed: %d\n", porto_WSAGetLastError());
        return -1;
    }
    c->outstanding++;
    return 0;
}

static CONN *new_conn(void) {
    CONN *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->s = porto_WSASocket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, PORTO_WSA_FLAG_OVERLAPPED);
    if (c->s == PORTO_INVALID_SOCKET) {
        free(c);
        return NULL;
    }
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    live++;
    return c;
}

static void free_conn(CONN *c) {
    if (c->s != PORTO_INVALID_SOCKET)
        porto_closesocket(c->s);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
    live--;
}

static void post_recv(CONN *c) {
    uint32_t flags = 0;
    memset(&c->recv.ov, 0, sizeof c->recv.ov);
    c->recv.op = OP_RECV;
    c->recv.conn = c;
    PORTO_WSABUF b = {BUF_SIZE, (char *)c->recv.data};
    if (porto_WSARecv(c->s, &b, 1, NULL, &flags, &c->recv.ov, NULL) == PORTO_SOCKET_ERROR &&
        porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
        if (failed++ == 0)
            fprintf(stderr, "iocp_tcp_echo: WSARecv failed: %d\n", porto_WSAGetLastError());
        c->closing = 1;
        return;
    }
    c->outstanding++;
}

/* sockperf's messages: seq (8), flags (2, big-endian; 1 = from a client, 2 = pong requested),
 * length (4, big-endian, the whole message). Each complete one that asks is sent back. */
static void on_data(CONN *c, const unsigned char *d, size_t n) {
    if (c->npending + n > sizeof c->pending) {
        if (failed++ == 0)
            fprintf(stderr, "iocp_tcp_echo: a message longer than %zu bytes\n", sizeof c->pending);
        c->closing = 1;
        return;
    }
    memcpy(c->pending + c->npending, d, n);
    c->npending += n;
    size_t at = 0;
    while (c->npending - at >= 14) {
        unsigned char *m = c->pending + at;
        uint32_t len = ((uint32_t)m[10] << 24) | ((uint32_t)m[11] << 16) | ((uint32_t)m[12] << 8) | m[13];
        if (len < 14 || len > BUF_SIZE) {
            if (failed++ == 0)
                fprintf(stderr, "iocp_tcp_echo: a malformed message (length %u)\n", len);
            c->closing = 1;
            return;
        }
        if (c->npending - at < len)
            break;
        requests++;
        if (m[9] & 2) {
            m[9] &= (unsigned char)~1u;
            IO *tx = malloc(sizeof *tx);
            if (!tx) {
                c->closing = 1;
                return;
            }
            memset(&tx->ov, 0, sizeof tx->ov);
            tx->op = OP_SEND;
            tx->conn = c;
            memcpy(tx->data, m, len);
            PORTO_WSABUF b = {len, (char *)tx->data};
            if (porto_WSASend(c->s, &b, 1, NULL, 0, &tx->ov, NULL) == PORTO_SOCKET_ERROR &&
                porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
                if (failed++ == 0)
                    fprintf(stderr, "iocp_tcp_echo: WSASend failed: %d\n", porto_WSAGetLastError());
                free(tx);
                c->closing = 1;
                return;
            }
            c->outstanding++;
            replies++;
        }
        at += len;
    }
    memmove(c->pending, c->pending + at, c->npending - at);
    c->npending -= at;
}

/* The client closed (or failed): shut down and reuse the socket for the next AcceptEx. */
static void disconnect(CONN *c) {
    memset(&c->disconnect.ov, 0, sizeof c->disconnect.ov);
    c->disconnect.op = OP_DISCONNECT;
    c->disconnect.conn = c;
    if (!DisconnectEx_(c->s, &c->disconnect.ov, PORTO_TF_REUSE_SOCKET, 0) &&
        porto_WSAGetLastError() != PORTO_WSA_IO_PENDING) {
        porto_closesocket(c->s);
        c->s = PORTO_INVALID_SOCKET;
        return;
    }
    c->outstanding++;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PORT [SECONDS] [-6]\n", argv[0]);
        return 2;
    }
    int port = atoi(argv[1]);
    double seconds = argc > 2 ? atof(argv[2]) : 0;
    v6 = argc > 3 && strcmp(argv[3], "-6") == 0;
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    int err = porto_WSAStartup(0x0202, NULL);
    if (err != 0) {
        fprintf(stderr, "iocp_tcp_echo: WSAStartup failed: %d\n", err);
        return 1;
    }
    listener = porto_WSASocket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, IPPROTO_TCP, NULL, 0, PORTO_WSA_FLAG_OVERLAPPED);
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
    if (listener == PORTO_INVALID_SOCKET || porto_bind(listener, (struct sockaddr *)&addr, addrlen) != 0 ||
        porto_listen(listener, 128) != 0) {
        fprintf(stderr, "iocp_tcp_echo: socket/bind/listen failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
    if (iocp == 0 || porto_CreateIoCompletionPort((PORTO_HANDLE)listener, iocp, LISTEN_KEY, 0) != iocp) {
        fprintf(stderr, "iocp_tcp_echo: CreateIoCompletionPort failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    if (get_fn(listener, &PORTO_WSAID_ACCEPTEX, &AcceptEx_, sizeof AcceptEx_) != 0 ||
        get_fn(listener, &PORTO_WSAID_DISCONNECTEX, &DisconnectEx_, sizeof DisconnectEx_) != 0 ||
        get_fn(listener, &PORTO_WSAID_GETACCEPTEXSOCKADDRS, &GetAcceptExSockaddrs_, sizeof GetAcceptExSockaddrs_) != 0) {
        fprintf(stderr, "iocp_tcp_echo: WSAIoctl(SIO_GET_EXTENSION_FUNCTION_POINTER) failed: %d\n",
                porto_WSAGetLastError());
        return 1;
    }
    for (int i = 0; i < ACCEPTS; i++) {
        CONN *c = new_conn();
        if (!c || post_accept(c) != 0)
            return 1;
    }
    printf("iocp_tcp_echo: listening on %s port %d\n", v6 ? "[::1]" : "127.0.0.1", port);
    fflush(stdout);

    double end = seconds > 0 ? now_s() + seconds : 0;
    PORTO_OVERLAPPED_ENTRY entries[64];
    for (;;) {
        int closing = stop || (end > 0 && now_s() >= end);
        if (closing && listener != PORTO_INVALID_SOCKET) {
            /* The accepts still posted complete WSA_OPERATION_ABORTED, each once; open
             * connections are closed, their receives aborted. Each CONN goes when its last
             * operation has been dequeued. */
            porto_closesocket(listener);
            listener = PORTO_INVALID_SOCKET;
            for (CONN *c = conns; c; c = c->next) {
                c->closing = 1;
                if (c->associated && c->s != PORTO_INVALID_SOCKET) {
                    porto_closesocket(c->s);
                    c->s = PORTO_INVALID_SOCKET;
                }
            }
            for (CONN *c = conns, *next; c; c = next) {
                next = c->next;
                if (c->outstanding == 0)
                    free_conn(c);
            }
        }
        if (listener == PORTO_INVALID_SOCKET && live == 0)
            break;
        uint32_t n = 0;
        if (!porto_GetQueuedCompletionStatusEx(iocp, entries, 64, &n, 100, 0)) {
            if (porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT)
                continue;
            fprintf(stderr, "iocp_tcp_echo: GetQueuedCompletionStatusEx failed: %d\n", porto_WSAGetLastError());
            return 1;
        }
        for (uint32_t i = 0; i < n; i++) {
            IO *io = (IO *)entries[i].lpOverlapped;
            CONN *c = io->conn;
            uint64_t status = entries[i].Internal;
            uint32_t bytes = entries[i].dwNumberOfBytesTransferred;
            c->outstanding--;
            switch (io->op) {
            case OP_ACCEPT:
                if (status == PORTO_WSA_OPERATION_ABORTED) {
                    accepts_aborted++;
                    c->closing = 1;
                    break;
                }
                if (status != 0) {
                    if (failed++ == 0)
                        fprintf(stderr, "iocp_tcp_echo: AcceptEx completed with %llu\n", (unsigned long long)status);
                    c->closing = 1;
                    break;
                }
                accepted++;
                if (listener == PORTO_INVALID_SOCKET)
                    c->closing = 1; /* accepted while stopping */
                {
                    struct sockaddr *local = NULL, *remote = NULL;
                    int32_t llen = 0, rlen = 0;
                    GetAcceptExSockaddrs_(c->acc, BUF_SIZE, ADDR_AREA, ADDR_AREA, &local, &llen, &remote, &rlen);
                    if (!local || !remote || remote->sa_family != (v6 ? AF_INET6 : AF_INET) || rlen <= 0) {
                        if (failed++ == 0)
                            fprintf(stderr, "iocp_tcp_echo: GetAcceptExSockaddrs gave no addresses\n");
                    }
                }
                porto_setsockopt(c->s, SOL_SOCKET, PORTO_SO_UPDATE_ACCEPT_CONTEXT, &listener, sizeof listener);
                if (!c->associated) {
                    if (porto_CreateIoCompletionPort((PORTO_HANDLE)c->s, iocp, 2, 0) != iocp) {
                        fprintf(stderr, "iocp_tcp_echo: associating a connection failed: %d\n",
                                porto_WSAGetLastError());
                        return 1;
                    }
                    c->associated = 1;
                }
                if (!c->closing) {
                    on_data(c, c->acc, bytes); /* the first data came with the accept */
                    if (!c->closing)
                        post_recv(c);
                }
                /* Keep ACCEPTS accepts posted. */
                if (listener != PORTO_INVALID_SOCKET) {
                    CONN *next = new_conn();
                    if (!next || post_accept(next) != 0)
                        return 1;
                }
                break;
            case OP_RECV:
                if (status != 0 || bytes == 0)
                    c->closing = 1; /* closed by the client, or failed */
                else {
                    on_data(c, io->data, bytes);
                    if (!c->closing)
                        post_recv(c);
                }
                break;
            case OP_SEND:
                if (status != 0 && failed++ == 0)
                    fprintf(stderr, "iocp_tcp_echo: a send completed with %llu\n", (unsigned long long)status);
                free(io);
                break;
            case OP_DISCONNECT:
                if (status == 0 && listener != PORTO_INVALID_SOCKET) {
                    /* TF_REUSE_SOCKET: the same socket accepts the next connection. */
                    reused++;
                    if (post_accept(c) != 0)
                        return 1;
                    continue;
                }
                porto_closesocket(c->s);
                c->s = PORTO_INVALID_SOCKET;
                break;
            }
            if (c->closing && c->outstanding == 0) {
                if (c->s != PORTO_INVALID_SOCKET && io->op != OP_ACCEPT && listener != PORTO_INVALID_SOCKET) {
                    disconnect(c);
                    if (c->outstanding > 0)
                        continue;
                }
                free_conn(c);
            }
        }
    }
    porto_CloseHandle(iocp);
    porto_WSACleanup();
    printf("iocp_tcp_echo: stopped; %llu connections, %llu requests, %llu replies, %llu sockets reused, %llu failed, "
           "%llu accepts aborted at close\n",
           accepted, requests, replies, reused, failed, accepts_aborted);
    return 0;
}
