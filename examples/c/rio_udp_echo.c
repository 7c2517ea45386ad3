/* A Registered I/O UDP echo server for sockperf, structured as Windows' RIO samples are,
 * with porto's prefix: WSASocket(WSA_FLAG_REGISTERED_IO), bind, WSAIoctl for the RIO
 * function table, an I/O completion port as the completion queue's notification,
 * RIORegisterBuffer over this program's own memory (data slots and SOCKADDR_INET slots),
 * RIOCreateCompletionQueue, RIOCreateRequestQueue, receives pre-posted with RIOReceiveEx
 * (deferred, then committed), and a loop: GetQueuedCompletionStatus -> RIODequeueCompletion
 * -> RIOSendEx the request back from the slot it arrived in (RIO_MSG_DONT_NOTIFY: its result
 * rides along with later receives) -> when that send completes, RIOReceiveEx on the slot
 * again -> commit -> RIONotify. The kernel reads and writes the
 * registered memory directly: no copy in porto.
 *
 * At the end closesocket aborts the receives still posted (each completes once,
 * WSA_OPERATION_ABORTED, into the completion queue), then RIOCloseCompletionQueue,
 * RIODeregisterBuffer, CloseHandle, WSACleanup.
 *
 *   rio_udp_echo PORT [SECONDS] [-6]     (SECONDS 0 or absent: until SIGINT/SIGTERM)
 */
#include "porto.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLOTS 64          /* each slot: one receive or its reply in flight */
#define SLOT_SIZE 2048
#define RESULTS 64

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

static PORTO_RIO_EXTENSION_FUNCTION_TABLE rio;
static PORTO_RIO_RQ rq;
static PORTO_RIO_BUFFERID data_id, addr_id;
static unsigned char *data_mem;

/* RequestContext: the slot, and whether the request was the reply. */
#define CTX(slot, is_send) ((void *)(uintptr_t)(((uintptr_t)(slot) << 1) | (is_send)))

static PORTO_RIO_BUF data_buf(int slot, uint32_t len) {
    PORTO_RIO_BUF b = {data_id, (uint32_t)slot * SLOT_SIZE, len};
    return b;
}

static PORTO_RIO_BUF addr_buf(int slot) {
    PORTO_RIO_BUF b = {addr_id, (uint32_t)(slot * sizeof(PORTO_SOCKADDR_INET)), sizeof(PORTO_SOCKADDR_INET)};
    return b;
}

static int post_recv(int slot) {
    PORTO_RIO_BUF d = data_buf(slot, SLOT_SIZE), a = addr_buf(slot);
    if (!rio.RIOReceiveEx(rq, &d, 1, NULL, &a, NULL, NULL, PORTO_RIO_MSG_DEFER, CTX(slot, 0))) {
        fprintf(stderr, "rio_udp_echo: RIOReceiveEx failed: %d\n", porto_WSAGetLastError());
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
        fprintf(stderr, "rio_udp_echo: WSAStartup failed: %d\n", err);
        return 1;
    }
    PORTO_SOCKET s = porto_WSASocket(v6 ? AF_INET6 : AF_INET, SOCK_DGRAM, IPPROTO_UDP, NULL, 0,
                                     PORTO_WSA_FLAG_REGISTERED_IO);
    if (s == PORTO_INVALID_SOCKET) {
        fprintf(stderr, "rio_udp_echo: WSASocket failed: %d\n", porto_WSAGetLastError());
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
        fprintf(stderr, "rio_udp_echo: bind failed: %d\n", porto_WSAGetLastError());
        return 1;
    }

    /* The RIO function table, fetched once. */
    PORTO_GUID id = PORTO_WSAID_MULTIPLE_RIO;
    uint32_t got = 0;
    if (porto_WSAIoctl(s, PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &id, sizeof id, &rio, sizeof rio, &got,
                       NULL, NULL) != 0) {
        fprintf(stderr, "rio_udp_echo: WSAIoctl(WSAID_MULTIPLE_RIO) failed: %d\n", porto_WSAGetLastError());
        return 1;
    }

    /* The completion queue tells this port when results are there. */
    PORTO_HANDLE iocp = porto_CreateIoCompletionPort(PORTO_INVALID_HANDLE_VALUE, 0, 0, 1);
    if (iocp == 0) {
        fprintf(stderr, "rio_udp_echo: CreateIoCompletionPort failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    static PORTO_OVERLAPPED notify_ov;
    PORTO_RIO_NOTIFICATION_COMPLETION how;
    memset(&how, 0, sizeof how);
    how.Type = PORTO_RIO_IOCP_COMPLETION;
    how.Iocp.IocpHandle = iocp;
    how.Iocp.CompletionKey = (void *)1;
    how.Iocp.Overlapped = &notify_ov;
    PORTO_RIO_CQ cq = rio.RIOCreateCompletionQueue(2 * SLOTS, &how);
    if (cq == PORTO_RIO_INVALID_CQ) {
        fprintf(stderr, "rio_udp_echo: RIOCreateCompletionQueue failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    rq = rio.RIOCreateRequestQueue(s, SLOTS, 1, SLOTS, 1, cq, cq, NULL);
    if (rq == PORTO_RIO_INVALID_RQ) {
        fprintf(stderr, "rio_udp_echo: RIOCreateRequestQueue failed: %d\n", porto_WSAGetLastError());
        return 1;
    }

    /* This program's memory, registered in place. */
    data_mem = malloc((size_t)SLOTS * SLOT_SIZE);
    PORTO_SOCKADDR_INET *addrs = calloc(SLOTS, sizeof *addrs);
    if (!data_mem || !addrs) {
        fprintf(stderr, "rio_udp_echo: out of memory\n");
        return 1;
    }
    data_id = rio.RIORegisterBuffer((char *)data_mem, SLOTS * SLOT_SIZE);
    addr_id = rio.RIORegisterBuffer((char *)addrs, (uint32_t)(SLOTS * sizeof *addrs));
    if (data_id == PORTO_RIO_INVALID_BUFFERID || addr_id == PORTO_RIO_INVALID_BUFFERID) {
        fprintf(stderr, "rio_udp_echo: RIORegisterBuffer failed: %d\n", porto_WSAGetLastError());
        return 1;
    }

    /* Pre-post a receive on every slot (deferred), then commit them at once. */
    for (int i = 0; i < SLOTS; i++)
        if (post_recv(i) != 0)
            return 1;
    if (!rio.RIOReceive(rq, NULL, 0, PORTO_RIO_MSG_COMMIT_ONLY, NULL)) {
        fprintf(stderr, "rio_udp_echo: commit failed: %d\n", porto_WSAGetLastError());
        return 1;
    }
    if (rio.RIONotify(cq) != 0) {
        fprintf(stderr, "rio_udp_echo: RIONotify failed\n");
        return 1;
    }
    printf("rio_udp_echo: listening on %s port %d\n", v6 ? "[::1]" : "127.0.0.1", port);
    fflush(stdout);

    unsigned long long requests = 0, replies = 0, failed = 0, aborted = 0, sent_at_close = 0;
    int outstanding = SLOTS; /* requests not yet dequeued */
    double end = seconds > 0 ? now_s() + seconds : 0;
    PORTO_RIORESULT results[RESULTS];
    for (;;) {
        int closing = stop || (end > 0 && now_s() >= end);
        if (closing && s != PORTO_INVALID_SOCKET) {
            /* Every request still outstanding completes WSA_OPERATION_ABORTED, once. */
            porto_closesocket(s);
            s = PORTO_INVALID_SOCKET;
        }
        if (s == PORTO_INVALID_SOCKET && outstanding == 0)
            break;
        uint32_t bytes = 0;
        uint64_t key = 0;
        PORTO_OVERLAPPED *ov = NULL;
        if (!porto_GetQueuedCompletionStatus(iocp, &bytes, &key, &ov, 100)) {
            if (ov == NULL && porto_WSAGetLastError() == PORTO_WAIT_TIMEOUT)
                continue;
            fprintf(stderr, "rio_udp_echo: GetQueuedCompletionStatus failed: %d\n", porto_WSAGetLastError());
            return 1;
        }
        if (ov != &notify_ov || key != 1) {
            fprintf(stderr, "rio_udp_echo: a completion that is not the queue's notification\n");
            return 1;
        }
        uint32_t n;
        while ((n = rio.RIODequeueCompletion(cq, results, RESULTS)) > 0) {
            if (n == PORTO_RIO_CORRUPT_CQ) {
                fprintf(stderr, "rio_udp_echo: RIODequeueCompletion: corrupt queue\n");
                return 1;
            }
            for (uint32_t i = 0; i < n; i++) {
                int slot = (int)(results[i].RequestContext >> 1);
                int was_send = (int)(results[i].RequestContext & 1);
                outstanding--;
                if (results[i].Status == PORTO_WSA_OPERATION_ABORTED) {
                    aborted++;
                    continue;
                }
                if (results[i].Status != 0 && failed++ == 0)
                    fprintf(stderr, "rio_udp_echo: first failed %s: %d\n", was_send ? "send" : "receive",
                            results[i].Status);
                if (s == PORTO_INVALID_SOCKET) {
                    sent_at_close += was_send && results[i].Status == 0;
                    continue;
                }
                if (!was_send && results[i].Status == 0) {
                    requests++;
                    uint32_t len = results[i].BytesTransferred;
                    if (make_reply(data_mem + (size_t)slot * SLOT_SIZE, len)) {
                        /* Back to the sender, from the slot it arrived in. */
                        PORTO_RIO_BUF d = data_buf(slot, len), a = addr_buf(slot);
                        /* DONT_NOTIFY: a send's result does not wake this loop; it is
                         * dequeued with the next receives (the slot has to wait for it). */
                        if (rio.RIOSendEx(rq, &d, 1, NULL, &a, NULL, NULL,
                                          PORTO_RIO_MSG_DEFER | PORTO_RIO_MSG_DONT_NOTIFY, CTX(slot, 1))) {
                            replies++;
                            outstanding++;
                            continue;
                        }
                        if (failed++ == 0)
                            fprintf(stderr, "rio_udp_echo: RIOSendEx failed: %d\n", porto_WSAGetLastError());
                    }
                }
                /* The slot is free again: receive into it. */
                if (post_recv(slot) != 0)
                    return 1;
                outstanding++;
            }
        }
        if (s != PORTO_INVALID_SOCKET && !rio.RIOSend(rq, NULL, 0, PORTO_RIO_MSG_COMMIT_ONLY, NULL)) {
            fprintf(stderr, "rio_udp_echo: commit failed: %d\n", porto_WSAGetLastError());
            return 1;
        }
        if (rio.RIONotify(cq) != 0) {
            fprintf(stderr, "rio_udp_echo: RIONotify failed\n");
            return 1;
        }
    }
    rio.RIOCloseCompletionQueue(cq);
    rio.RIODeregisterBuffer(data_id);
    rio.RIODeregisterBuffer(addr_id);
    free(data_mem);
    free(addrs);
    porto_CloseHandle(iocp);
    porto_WSACleanup();
    /* Each slot had one request outstanding at close: a receive (aborted) or a reply (sent). */
    printf("rio_udp_echo: stopped; %llu requests, %llu replies, %llu failed, %llu requests ended at close "
           "(%llu aborted, %llu sent)\n",
           requests, replies, failed, aborted + sent_at_close, aborted, sent_at_close);
    return 0;
}
