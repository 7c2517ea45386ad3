/* porto_winsock.h: porto.h under Windows' own names, so a Winsock / IOCP / RIO program
 * ports by replacing #include <winsock2.h>, <mswsock.h>, <ws2tcpip.h> (and the IOCP
 * types of <windows.h>) with #include "porto_winsock.h". Every porto_X and PORTO_X of
 * porto.h is X here (a name Linux's headers define too is replaced); the Win32 base
 * types come first. Generated from porto.h by ffi/tests/header.rs
 * (`PORTO_BLESS=1 cargo test -p porto-ffi --test header`); do not edit.
 * Not here: Win32 beyond Winsock and IOCP (threads, CreateThread, critical sections,
 * Sleep, the console), and `struct timeval` for select (Linux's stays: pass a
 * PORTO_TIMEVAL). */
#ifndef PORTO_WINSOCK_H
#define PORTO_WINSOCK_H

#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>
#include "porto.h"

/* Win32 base types, as <windows.h> has them (64-bit). */
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

/* Windows' names. */
#undef fd_set
#define fd_set PORTO_FD_SET
#undef AcceptEx
#define AcceptEx porto_AcceptEx
#undef CF_ACCEPT
#define CF_ACCEPT PORTO_CF_ACCEPT
#undef CF_DEFER
#define CF_DEFER PORTO_CF_DEFER
#undef CF_REJECT
#define CF_REJECT PORTO_CF_REJECT
#undef CancelIoEx
#define CancelIoEx porto_CancelIoEx
#undef CloseHandle
#define CloseHandle porto_CloseHandle
#undef ConnectEx
#define ConnectEx porto_ConnectEx
#undef CreateIoCompletionPort
#define CreateIoCompletionPort porto_CreateIoCompletionPort
#undef DisconnectEx
#define DisconnectEx porto_DisconnectEx
#undef ERROR_ABANDONED_WAIT_0
#define ERROR_ABANDONED_WAIT_0 PORTO_ERROR_ABANDONED_WAIT_0
#undef ERROR_INVALID_HANDLE
#define ERROR_INVALID_HANDLE PORTO_ERROR_INVALID_HANDLE
#undef ERROR_INVALID_PARAMETER
#define ERROR_INVALID_PARAMETER PORTO_ERROR_INVALID_PARAMETER
#undef FD_CLR
#define FD_CLR PORTO_FD_CLR
#undef FD_ISSET
#define FD_ISSET PORTO_FD_ISSET
#undef FD_SET
#define FD_SET PORTO_FD_SET
#undef FD_SETSIZE
#define FD_SETSIZE PORTO_FD_SETSIZE
#undef FD_ZERO
#define FD_ZERO PORTO_FD_ZERO
#undef FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
#define FILE_SKIP_COMPLETION_PORT_ON_SUCCESS PORTO_FILE_SKIP_COMPLETION_PORT_ON_SUCCESS
#undef FILE_SKIP_SET_EVENT_ON_HANDLE
#define FILE_SKIP_SET_EVENT_ON_HANDLE PORTO_FILE_SKIP_SET_EVENT_ON_HANDLE
#undef FIONBIO
#define FIONBIO PORTO_FIONBIO
#undef FIONREAD
#define FIONREAD PORTO_FIONREAD
#undef GUID
#define GUID PORTO_GUID
#undef GetAcceptExSockaddrs
#define GetAcceptExSockaddrs porto_GetAcceptExSockaddrs
#undef GetOverlappedResult
#define GetOverlappedResult porto_GetOverlappedResult
#undef GetQueuedCompletionStatus
#define GetQueuedCompletionStatus porto_GetQueuedCompletionStatus
#undef GetQueuedCompletionStatusEx
#define GetQueuedCompletionStatusEx porto_GetQueuedCompletionStatusEx
#undef HANDLE
#define HANDLE PORTO_HANDLE
#undef HasOverlappedIoCompleted
#define HasOverlappedIoCompleted PORTO_HasOverlappedIoCompleted
#undef INFINITE
#define INFINITE PORTO_INFINITE
#undef INVALID_HANDLE_VALUE
#define INVALID_HANDLE_VALUE PORTO_INVALID_HANDLE_VALUE
#undef INVALID_SOCKET
#define INVALID_SOCKET PORTO_INVALID_SOCKET
#undef LPCONDITIONPROC
#define LPCONDITIONPROC PORTO_LPCONDITIONPROC
#undef LPFN_ACCEPTEX
#define LPFN_ACCEPTEX PORTO_LPFN_ACCEPTEX
#undef LPFN_CONNECTEX
#define LPFN_CONNECTEX PORTO_LPFN_CONNECTEX
#undef LPFN_DISCONNECTEX
#define LPFN_DISCONNECTEX PORTO_LPFN_DISCONNECTEX
#undef LPFN_GETACCEPTEXSOCKADDRS
#define LPFN_GETACCEPTEXSOCKADDRS PORTO_LPFN_GETACCEPTEXSOCKADDRS
#undef LPFN_RIOCLOSECOMPLETIONQUEUE
#define LPFN_RIOCLOSECOMPLETIONQUEUE PORTO_LPFN_RIOCLOSECOMPLETIONQUEUE
#undef LPFN_RIOCREATECOMPLETIONQUEUE
#define LPFN_RIOCREATECOMPLETIONQUEUE PORTO_LPFN_RIOCREATECOMPLETIONQUEUE
#undef LPFN_RIOCREATEREQUESTQUEUE
#define LPFN_RIOCREATEREQUESTQUEUE PORTO_LPFN_RIOCREATEREQUESTQUEUE
#undef LPFN_RIODEQUEUECOMPLETION
#define LPFN_RIODEQUEUECOMPLETION PORTO_LPFN_RIODEQUEUECOMPLETION
#undef LPFN_RIODEREGISTERBUFFER
#define LPFN_RIODEREGISTERBUFFER PORTO_LPFN_RIODEREGISTERBUFFER
#undef LPFN_RIONOTIFY
#define LPFN_RIONOTIFY PORTO_LPFN_RIONOTIFY
#undef LPFN_RIORECEIVE
#define LPFN_RIORECEIVE PORTO_LPFN_RIORECEIVE
#undef LPFN_RIORECEIVEEX
#define LPFN_RIORECEIVEEX PORTO_LPFN_RIORECEIVEEX
#undef LPFN_RIOREGISTERBUFFER
#define LPFN_RIOREGISTERBUFFER PORTO_LPFN_RIOREGISTERBUFFER
#undef LPFN_RIORESIZECOMPLETIONQUEUE
#define LPFN_RIORESIZECOMPLETIONQUEUE PORTO_LPFN_RIORESIZECOMPLETIONQUEUE
#undef LPFN_RIORESIZEREQUESTQUEUE
#define LPFN_RIORESIZEREQUESTQUEUE PORTO_LPFN_RIORESIZEREQUESTQUEUE
#undef LPFN_RIOSEND
#define LPFN_RIOSEND PORTO_LPFN_RIOSEND
#undef LPFN_RIOSENDEX
#define LPFN_RIOSENDEX PORTO_LPFN_RIOSENDEX
#undef MSG_BCAST
#define MSG_BCAST PORTO_MSG_BCAST
#undef MSG_CTRUNC
#define MSG_CTRUNC PORTO_MSG_CTRUNC
#undef MSG_MCAST
#define MSG_MCAST PORTO_MSG_MCAST
#undef OVERLAPPED
#define OVERLAPPED PORTO_OVERLAPPED
#undef OVERLAPPED_ENTRY
#define OVERLAPPED_ENTRY PORTO_OVERLAPPED_ENTRY
#undef POLLERR
#define POLLERR PORTO_POLLERR
#undef POLLHUP
#define POLLHUP PORTO_POLLHUP
#undef POLLIN
#define POLLIN PORTO_POLLIN
#undef POLLNVAL
#define POLLNVAL PORTO_POLLNVAL
#undef POLLOUT
#define POLLOUT PORTO_POLLOUT
#undef POLLRDBAND
#define POLLRDBAND PORTO_POLLRDBAND
#undef POLLRDNORM
#define POLLRDNORM PORTO_POLLRDNORM
#undef POLLWRBAND
#define POLLWRBAND PORTO_POLLWRBAND
#undef POLLWRNORM
#define POLLWRNORM PORTO_POLLWRNORM
#undef PostQueuedCompletionStatus
#define PostQueuedCompletionStatus porto_PostQueuedCompletionStatus
#undef QOSAddSocketToFlow
#define QOSAddSocketToFlow porto_QOSAddSocketToFlow
#undef QOSCloseHandle
#define QOSCloseHandle porto_QOSCloseHandle
#undef QOSCreateHandle
#define QOSCreateHandle porto_QOSCreateHandle
#undef QOSFlowRateNotApplicable
#define QOSFlowRateNotApplicable PORTO_QOSFlowRateNotApplicable
#undef QOSQueryFlow
#define QOSQueryFlow porto_QOSQueryFlow
#undef QOSQueryFlowFundamentals
#define QOSQueryFlowFundamentals PORTO_QOSQueryFlowFundamentals
#undef QOSQueryOutgoingRate
#define QOSQueryOutgoingRate PORTO_QOSQueryOutgoingRate
#undef QOSQueryPacketPriority
#define QOSQueryPacketPriority PORTO_QOSQueryPacketPriority
#undef QOSRemoveSocketFromFlow
#define QOSRemoveSocketFromFlow porto_QOSRemoveSocketFromFlow
#undef QOSSetFlow
#define QOSSetFlow porto_QOSSetFlow
#undef QOSSetOutgoingDSCPValue
#define QOSSetOutgoingDSCPValue PORTO_QOSSetOutgoingDSCPValue
#undef QOSSetOutgoingRate
#define QOSSetOutgoingRate PORTO_QOSSetOutgoingRate
#undef QOSSetTrafficType
#define QOSSetTrafficType PORTO_QOSSetTrafficType
#undef QOSShapeAndMark
#define QOSShapeAndMark PORTO_QOSShapeAndMark
#undef QOSShapeOnly
#define QOSShapeOnly PORTO_QOSShapeOnly
#undef QOSTrafficTypeAudioVideo
#define QOSTrafficTypeAudioVideo PORTO_QOSTrafficTypeAudioVideo
#undef QOSTrafficTypeBackground
#define QOSTrafficTypeBackground PORTO_QOSTrafficTypeBackground
#undef QOSTrafficTypeBestEffort
#define QOSTrafficTypeBestEffort PORTO_QOSTrafficTypeBestEffort
#undef QOSTrafficTypeControl
#define QOSTrafficTypeControl PORTO_QOSTrafficTypeControl
#undef QOSTrafficTypeExcellentEffort
#define QOSTrafficTypeExcellentEffort PORTO_QOSTrafficTypeExcellentEffort
#undef QOSTrafficTypeVoice
#define QOSTrafficTypeVoice PORTO_QOSTrafficTypeVoice
#undef QOSUseNonConformantMarkings
#define QOSUseNonConformantMarkings PORTO_QOSUseNonConformantMarkings
#undef QOS_FLOWID
#define QOS_FLOWID PORTO_QOS_FLOWID
#undef QOS_FLOWRATE_OUTGOING
#define QOS_FLOWRATE_OUTGOING PORTO_QOS_FLOWRATE_OUTGOING
#undef QOS_NON_ADAPTIVE_FLOW
#define QOS_NON_ADAPTIVE_FLOW PORTO_QOS_NON_ADAPTIVE_FLOW
#undef QOS_PACKET_PRIORITY
#define QOS_PACKET_PRIORITY PORTO_QOS_PACKET_PRIORITY
#undef QOS_VERSION
#define QOS_VERSION PORTO_QOS_VERSION
#undef RIORESULT
#define RIORESULT PORTO_RIORESULT
#undef RIO_BUF
#define RIO_BUF PORTO_RIO_BUF
#undef RIO_BUFFERID
#define RIO_BUFFERID PORTO_RIO_BUFFERID
#undef RIO_CORRUPT_CQ
#define RIO_CORRUPT_CQ PORTO_RIO_CORRUPT_CQ
#undef RIO_CQ
#define RIO_CQ PORTO_RIO_CQ
#undef RIO_EVENT_COMPLETION
#define RIO_EVENT_COMPLETION PORTO_RIO_EVENT_COMPLETION
#undef RIO_EXTENSION_FUNCTION_TABLE
#define RIO_EXTENSION_FUNCTION_TABLE PORTO_RIO_EXTENSION_FUNCTION_TABLE
#undef RIO_INVALID_BUFFERID
#define RIO_INVALID_BUFFERID PORTO_RIO_INVALID_BUFFERID
#undef RIO_INVALID_CQ
#define RIO_INVALID_CQ PORTO_RIO_INVALID_CQ
#undef RIO_INVALID_RQ
#define RIO_INVALID_RQ PORTO_RIO_INVALID_RQ
#undef RIO_IOCP_COMPLETION
#define RIO_IOCP_COMPLETION PORTO_RIO_IOCP_COMPLETION
#undef RIO_MAX_CQ_SIZE
#define RIO_MAX_CQ_SIZE PORTO_RIO_MAX_CQ_SIZE
#undef RIO_MSG_COMMIT_ONLY
#define RIO_MSG_COMMIT_ONLY PORTO_RIO_MSG_COMMIT_ONLY
#undef RIO_MSG_DEFER
#define RIO_MSG_DEFER PORTO_RIO_MSG_DEFER
#undef RIO_MSG_DONT_NOTIFY
#define RIO_MSG_DONT_NOTIFY PORTO_RIO_MSG_DONT_NOTIFY
#undef RIO_MSG_WAITALL
#define RIO_MSG_WAITALL PORTO_RIO_MSG_WAITALL
#undef RIO_NOTIFICATION_COMPLETION
#define RIO_NOTIFICATION_COMPLETION PORTO_RIO_NOTIFICATION_COMPLETION
#undef RIO_RQ
#define RIO_RQ PORTO_RIO_RQ
#undef SD_BOTH
#define SD_BOTH PORTO_SD_BOTH
#undef SD_RECEIVE
#define SD_RECEIVE PORTO_SD_RECEIVE
#undef SD_SEND
#define SD_SEND PORTO_SD_SEND
#undef SIO_GET_EXTENSION_FUNCTION_POINTER
#define SIO_GET_EXTENSION_FUNCTION_POINTER PORTO_SIO_GET_EXTENSION_FUNCTION_POINTER
#undef SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER
#define SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER PORTO_SIO_GET_MULTIPLE_EXTENSION_FUNCTION_POINTER
#undef SOCKADDR_INET
#define SOCKADDR_INET PORTO_SOCKADDR_INET
#undef SOCKET
#define SOCKET PORTO_SOCKET
#undef SOCKET_ERROR
#define SOCKET_ERROR PORTO_SOCKET_ERROR
#undef SO_UPDATE_ACCEPT_CONTEXT
#define SO_UPDATE_ACCEPT_CONTEXT PORTO_SO_UPDATE_ACCEPT_CONTEXT
#undef SO_UPDATE_CONNECT_CONTEXT
#define SO_UPDATE_CONNECT_CONTEXT PORTO_SO_UPDATE_CONNECT_CONTEXT
#undef STATUS_PENDING
#define STATUS_PENDING PORTO_STATUS_PENDING
#undef SetFileCompletionNotificationModes
#define SetFileCompletionNotificationModes porto_SetFileCompletionNotificationModes
#undef TF_REUSE_SOCKET
#define TF_REUSE_SOCKET PORTO_TF_REUSE_SOCKET
#undef TIMEVAL
#define TIMEVAL PORTO_TIMEVAL
#undef WAIT_FAILED
#define WAIT_FAILED PORTO_WAIT_FAILED
#undef WAIT_OBJECT_0
#define WAIT_OBJECT_0 PORTO_WAIT_OBJECT_0
#undef WAIT_TIMEOUT
#define WAIT_TIMEOUT PORTO_WAIT_TIMEOUT
#undef WSAAccept
#define WSAAccept porto_WSAAccept
#undef WSABUF
#define WSABUF PORTO_WSABUF
#undef WSACleanup
#define WSACleanup porto_WSACleanup
#undef WSACloseEvent
#define WSACloseEvent porto_WSACloseEvent
#undef WSACreateEvent
#define WSACreateEvent porto_WSACreateEvent
#undef WSAEACCES
#define WSAEACCES PORTO_WSAEACCES
#undef WSAEADDRINUSE
#define WSAEADDRINUSE PORTO_WSAEADDRINUSE
#undef WSAEADDRNOTAVAIL
#define WSAEADDRNOTAVAIL PORTO_WSAEADDRNOTAVAIL
#undef WSAEAFNOSUPPORT
#define WSAEAFNOSUPPORT PORTO_WSAEAFNOSUPPORT
#undef WSAECONNABORTED
#define WSAECONNABORTED PORTO_WSAECONNABORTED
#undef WSAECONNREFUSED
#define WSAECONNREFUSED PORTO_WSAECONNREFUSED
#undef WSAECONNRESET
#define WSAECONNRESET PORTO_WSAECONNRESET
#undef WSAEFAULT
#define WSAEFAULT PORTO_WSAEFAULT
#undef WSAEHOSTUNREACH
#define WSAEHOSTUNREACH PORTO_WSAEHOSTUNREACH
#undef WSAEINTR
#define WSAEINTR PORTO_WSAEINTR
#undef WSAEINVAL
#define WSAEINVAL PORTO_WSAEINVAL
#undef WSAEISCONN
#define WSAEISCONN PORTO_WSAEISCONN
#undef WSAEMFILE
#define WSAEMFILE PORTO_WSAEMFILE
#undef WSAEMSGSIZE
#define WSAEMSGSIZE PORTO_WSAEMSGSIZE
#undef WSAENETUNREACH
#define WSAENETUNREACH PORTO_WSAENETUNREACH
#undef WSAENOBUFS
#define WSAENOBUFS PORTO_WSAENOBUFS
#undef WSAENOPROTOOPT
#define WSAENOPROTOOPT PORTO_WSAENOPROTOOPT
#undef WSAENOTCONN
#define WSAENOTCONN PORTO_WSAENOTCONN
#undef WSAENOTSOCK
#define WSAENOTSOCK PORTO_WSAENOTSOCK
#undef WSAEOPNOTSUPP
#define WSAEOPNOTSUPP PORTO_WSAEOPNOTSUPP
#undef WSAESHUTDOWN
#define WSAESHUTDOWN PORTO_WSAESHUTDOWN
#undef WSAESOCKTNOSUPPORT
#define WSAESOCKTNOSUPPORT PORTO_WSAESOCKTNOSUPPORT
#undef WSAETIMEDOUT
#define WSAETIMEDOUT PORTO_WSAETIMEDOUT
#undef WSAETOOMANYREFS
#define WSAETOOMANYREFS PORTO_WSAETOOMANYREFS
#undef WSAEVENT
#define WSAEVENT PORTO_WSAEVENT
#undef WSAEWOULDBLOCK
#define WSAEWOULDBLOCK PORTO_WSAEWOULDBLOCK
#undef WSAGetLastError
#define WSAGetLastError porto_WSAGetLastError
#undef WSAGetOverlappedResult
#define WSAGetOverlappedResult porto_WSAGetOverlappedResult
#undef WSAID_ACCEPTEX
#define WSAID_ACCEPTEX PORTO_WSAID_ACCEPTEX
#undef WSAID_CONNECTEX
#define WSAID_CONNECTEX PORTO_WSAID_CONNECTEX
#undef WSAID_DISCONNECTEX
#define WSAID_DISCONNECTEX PORTO_WSAID_DISCONNECTEX
#undef WSAID_GETACCEPTEXSOCKADDRS
#define WSAID_GETACCEPTEXSOCKADDRS PORTO_WSAID_GETACCEPTEXSOCKADDRS
#undef WSAID_MULTIPLE_RIO
#define WSAID_MULTIPLE_RIO PORTO_WSAID_MULTIPLE_RIO
#undef WSAIoctl
#define WSAIoctl porto_WSAIoctl
#undef WSANOTINITIALISED
#define WSANOTINITIALISED PORTO_WSANOTINITIALISED
#undef WSAPOLLFD
#define WSAPOLLFD PORTO_WSAPOLLFD
#undef WSAPoll
#define WSAPoll porto_WSAPoll
#undef WSARecv
#define WSARecv porto_WSARecv
#undef WSARecvFrom
#define WSARecvFrom porto_WSARecvFrom
#undef WSAResetEvent
#define WSAResetEvent porto_WSAResetEvent
#undef WSASYSCALLFAILURE
#define WSASYSCALLFAILURE PORTO_WSASYSCALLFAILURE
#undef WSASend
#define WSASend porto_WSASend
#undef WSASendTo
#define WSASendTo porto_WSASendTo
#undef WSASetEvent
#define WSASetEvent porto_WSASetEvent
#undef WSASetLastError
#define WSASetLastError porto_WSASetLastError
#undef WSASocket
#define WSASocket porto_WSASocket
#undef WSAStartup
#define WSAStartup porto_WSAStartup
#undef WSATRY_AGAIN
#define WSATRY_AGAIN PORTO_WSATRY_AGAIN
#undef WSAWaitForMultipleEvents
#define WSAWaitForMultipleEvents porto_WSAWaitForMultipleEvents
#undef WSA_FLAG_OVERLAPPED
#define WSA_FLAG_OVERLAPPED PORTO_WSA_FLAG_OVERLAPPED
#undef WSA_FLAG_REGISTERED_IO
#define WSA_FLAG_REGISTERED_IO PORTO_WSA_FLAG_REGISTERED_IO
#undef WSA_INFINITE
#define WSA_INFINITE PORTO_WSA_INFINITE
#undef WSA_INVALID_EVENT
#define WSA_INVALID_EVENT PORTO_WSA_INVALID_EVENT
#undef WSA_INVALID_HANDLE
#define WSA_INVALID_HANDLE PORTO_WSA_INVALID_HANDLE
#undef WSA_INVALID_PARAMETER
#define WSA_INVALID_PARAMETER PORTO_WSA_INVALID_PARAMETER
#undef WSA_IO_INCOMPLETE
#define WSA_IO_INCOMPLETE PORTO_WSA_IO_INCOMPLETE
#undef WSA_IO_PENDING
#define WSA_IO_PENDING PORTO_WSA_IO_PENDING
#undef WSA_MAXIMUM_WAIT_EVENTS
#define WSA_MAXIMUM_WAIT_EVENTS PORTO_WSA_MAXIMUM_WAIT_EVENTS
#undef WSA_OPERATION_ABORTED
#define WSA_OPERATION_ABORTED PORTO_WSA_OPERATION_ABORTED
#undef WSA_WAIT_EVENT_0
#define WSA_WAIT_EVENT_0 PORTO_WSA_WAIT_EVENT_0
#undef WSA_WAIT_FAILED
#define WSA_WAIT_FAILED PORTO_WSA_WAIT_FAILED
#undef WSA_WAIT_TIMEOUT
#define WSA_WAIT_TIMEOUT PORTO_WSA_WAIT_TIMEOUT
#undef WaitForSingleObject
#define WaitForSingleObject porto_WaitForSingleObject
#undef __WSAFDIsSet
#define __WSAFDIsSet porto___WSAFDIsSet
#undef accept
#define accept porto_accept
#undef bind
#define bind porto_bind
#undef closesocket
#define closesocket porto_closesocket
#undef connect
#define connect porto_connect
#undef getpeername
#define getpeername porto_getpeername
#undef getsockname
#define getsockname porto_getsockname
#undef getsockopt
#define getsockopt porto_getsockopt
#undef ioctlsocket
#define ioctlsocket porto_ioctlsocket
#undef listen
#define listen porto_listen
#undef recv
#define recv porto_recv
#undef recvfrom
#define recvfrom porto_recvfrom
#undef select
#define select porto_select
#undef send
#define send porto_send
#undef sendto
#define sendto porto_sendto
#undef setsockopt
#define setsockopt porto_setsockopt
#undef shutdown
#define shutdown porto_shutdown
#undef socket
#define socket porto_socket

#endif /* PORTO_WINSOCK_H */
