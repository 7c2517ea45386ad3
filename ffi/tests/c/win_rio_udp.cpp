// A Registered I/O UDP program written the way Windows programmers write one (C++20
// designated initializers, the function table from WSAIoctl called as `rio.RIOReceive(...)`,
// event notification with NotifyReset, RIOSendEx with the destination in a registered
// buffer, a polled send queue), compiled with `porto_winsock.h` as its only Winsock include.
// It sends ROUNDS x BATCH datagrams to itself over loopback and checks each arrives once,
// intact, in a request it posted. Public RIO samples take these shapes; a rename header that
// defined RIOReceive as a macro broke every `rio.RIOReceive` call.
#include "porto_winsock.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

// Windows' layout (x64): Type, then the Event/Iocp union at 8; 32 bytes.
static_assert(sizeof(RIO_NOTIFICATION_COMPLETION) == 32, "RIO_NOTIFICATION_COMPLETION as mswsock.h lays it out");

constexpr DWORD PACKET = 256;
constexpr DWORD POSTED = 64; // receives posted at once
constexpr DWORD BATCH = 32;  // datagrams in flight at once (at most POSTED)
constexpr DWORD ROUNDS = 50;

static int fail(const char *what) {
    std::printf("FAILED: %s (last error %d)\n", what, WSAGetLastError());
    return 1;
}

int main() {
    WSADATA wsa{};
    if (WSAStartup(MAKEWORD(2, 2), &wsa) != 0)
        return fail("WSAStartup");

    SOCKET rx = WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, nullptr, 0, WSA_FLAG_REGISTERED_IO);
    SOCKET tx = WSASocket(AF_INET, SOCK_DGRAM, IPPROTO_UDP, nullptr, 0, WSA_FLAG_REGISTERED_IO);
    if (rx == INVALID_SOCKET || tx == INVALID_SOCKET)
        return fail("WSASocket");
    sockaddr_in here{
        .sin_family = AF_INET,
        .sin_port = 0,
        .sin_addr = {.s_addr = htonl(INADDR_LOOPBACK)},
        .sin_zero = {},
    };
    if (bind(rx, reinterpret_cast<sockaddr *>(&here), sizeof(here)) == SOCKET_ERROR)
        return fail("bind");
    int here_len = sizeof(here);
    if (getsockname(rx, reinterpret_cast<sockaddr *>(&here), &here_len) == SOCKET_ERROR)
        return fail("getsockname");

    RIO_EXTENSION_FUNCTION_TABLE rio{};
    GUID table_id = WSAID_MULTIPLE_RIO;
    DWORD got = 0;
    if (WSAIoctl(rx, SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER, &table_id, sizeof(table_id), &rio, sizeof(rio), &got,
                 nullptr, nullptr) == SOCKET_ERROR)
        return fail("WSAIoctl(WSAID_MULTIPLE_RIO)");

    // Receives: event-notified, the event reset by RIONotify.
    WSAEVENT ready = WSACreateEvent();
    if (ready == WSA_INVALID_EVENT)
        return fail("WSACreateEvent");
    RIO_NOTIFICATION_COMPLETION notify{
        .Type = RIO_EVENT_COMPLETION,
        .Event = {.EventHandle = ready, .NotifyReset = TRUE},
    };
    // A queue holds room for every request its request queues may have outstanding (each
    // has at least one of either kind): WSAENOBUFS otherwise, as on Windows.
    RIO_CQ rx_cq = rio.RIOCreateCompletionQueue(POSTED + 1, &notify);
    RIO_CQ tx_cq = rio.RIOCreateCompletionQueue(BATCH + 1, nullptr); // polled
    if (rx_cq == RIO_INVALID_CQ || tx_cq == RIO_INVALID_CQ)
        return fail("RIOCreateCompletionQueue");
    RIO_RQ rx_rq = rio.RIOCreateRequestQueue(rx, POSTED, 1, 1, 1, rx_cq, rx_cq, nullptr);
    RIO_RQ tx_rq = rio.RIOCreateRequestQueue(tx, 1, 1, BATCH, 1, tx_cq, tx_cq, nullptr);
    if (rx_rq == RIO_INVALID_RQ || tx_rq == RIO_INVALID_RQ)
        return fail("RIOCreateRequestQueue");

    // One registered region each: receive slots; the destination address then send slots.
    std::vector<char> rx_mem(POSTED * PACKET), tx_mem(sizeof(SOCKADDR_INET) + BATCH * PACKET);
    RIO_BUFFERID rx_id = rio.RIORegisterBuffer(rx_mem.data(), static_cast<DWORD>(rx_mem.size()));
    RIO_BUFFERID tx_id = rio.RIORegisterBuffer(tx_mem.data(), static_cast<DWORD>(tx_mem.size()));
    if (rx_id == RIO_INVALID_BUFFERID || tx_id == RIO_INVALID_BUFFERID)
        return fail("RIORegisterBuffer");
    SOCKADDR_INET to{};
    to.Ipv4 = here;
    std::memcpy(tx_mem.data(), &to, sizeof(to));
    RIO_BUF to_buf{.BufferId = tx_id, .Offset = 0, .Length = sizeof(SOCKADDR_INET)};

    std::vector<RIO_BUF> slots(POSTED);
    for (DWORD i = 0; i < POSTED; i++) {
        slots[i] = {.BufferId = rx_id, .Offset = i * PACKET, .Length = PACKET};
        if (!rio.RIOReceive(rx_rq, &slots[i], 1, 0, reinterpret_cast<PVOID>(static_cast<ULONG_PTR>(i))))
            return fail("RIOReceive");
    }

    std::vector<int> seen(ROUNDS * BATCH, 0);
    DWORD received = 0, notifies = 0;
    RIORESULT results[POSTED];
    for (DWORD round = 0; round < ROUNDS; round++) {
        for (DWORD j = 0; j < BATCH; j++) {
            DWORD seq = round * BATCH + j;
            DWORD off = sizeof(SOCKADDR_INET) + j * PACKET;
            std::memset(&tx_mem[off], static_cast<int>(seq & 0xff), PACKET);
            std::memcpy(&tx_mem[off], &seq, sizeof(seq));
            RIO_BUF data{.BufferId = tx_id, .Offset = off, .Length = PACKET};
            if (!rio.RIOSendEx(tx_rq, &data, 1, nullptr, &to_buf, nullptr, nullptr, 0, nullptr))
                return fail("RIOSendEx");
        }
        // The polled send queue: every send ends once, in full.
        DWORD sent = 0;
        for (int spins = 0; sent < BATCH && spins < 200000; spins++) {
            ULONG n = rio.RIODequeueCompletion(tx_cq, results, BATCH);
            if (n == RIO_CORRUPT_CQ)
                return fail("RIODequeueCompletion(send)");
            for (ULONG k = 0; k < n; k++) {
                if (results[k].Status != 0 || results[k].BytesTransferred != PACKET)
                    return fail("a send ended short or failed");
            }
            sent += n;
        }
        if (sent != BATCH)
            return fail("sends did not all complete");
        // The receives: wait on the event, dequeue, check, re-post the same slot.
        DWORD want = (round + 1) * BATCH;
        while (received < want) {
            if (rio.RIONotify(rx_cq) != 0)
                return fail("RIONotify");
            notifies++;
            if (WSAWaitForMultipleEvents(1, &ready, TRUE, 5000, FALSE) != WSA_WAIT_EVENT_0)
                return fail("no receive within 5 s");
            ULONG n = rio.RIODequeueCompletion(rx_cq, results, POSTED);
            if (n == RIO_CORRUPT_CQ)
                return fail("RIODequeueCompletion(receive)");
            for (ULONG k = 0; k < n; k++) {
                DWORD slot = static_cast<DWORD>(results[k].RequestContext);
                if (results[k].Status != 0 || results[k].BytesTransferred != PACKET || slot >= POSTED)
                    return fail("a receive failed or was cut");
                const char *p = &rx_mem[slot * PACKET];
                DWORD seq = 0;
                std::memcpy(&seq, p, sizeof(seq));
                if (seq >= seen.size() || seen[seq]++ != 0)
                    return fail("a datagram arrived twice or out of range");
                for (DWORD b = sizeof(seq); b < PACKET; b++) {
                    if (p[b] != static_cast<char>(seq & 0xff))
                        return fail("a datagram's bytes differ");
                }
                received++;
                if (!rio.RIOReceive(rx_rq, &slots[slot], 1, 0, reinterpret_cast<PVOID>(static_cast<ULONG_PTR>(slot))))
                    return fail("RIOReceive (re-post)");
            }
        }
    }
    // NotifyReset: RIONotify resets the event (it was set by the last notification).
    if (rio.RIONotify(rx_cq) != 0 || WSAWaitForMultipleEvents(1, &ready, TRUE, 0, FALSE) != WSA_WAIT_TIMEOUT)
        return fail("NotifyReset: RIONotify left the event set");

    rio.RIODeregisterBuffer(rx_id);
    rio.RIODeregisterBuffer(tx_id);
    closesocket(rx);
    closesocket(tx);
    rio.RIOCloseCompletionQueue(rx_cq);
    rio.RIOCloseCompletionQueue(tx_cq);
    WSACloseEvent(ready);
    WSACleanup();
    std::printf("rio-udp ok: %u datagrams, each once and intact, %u notifications\n", received, notifies);
    return 0;
}
