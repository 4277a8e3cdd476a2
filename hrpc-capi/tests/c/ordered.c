/*
 * A sender and a receiver written against the original hrpc API, for the kill tests.
 *
 *   ordered recv STORE PORT LOG     node 1 on 127.0.0.1:PORT; appends the number of every
 *                                   delivered message to LOG, one 32-byte line each (one
 *                                   write(2) that never crosses a page, so a kill never
 *                                   leaves half a line)
 *   ordered send STORE PORT COUNT [RATE]
 *                                   node 2; sends the numbers up to COUNT to node 1 (at most
 *                                   RATE per second if given), then keeps the node running so
 *                                   retransmissions continue
 *
 * Message k from node 2 carries the number k; a restarted sender asks the store which number
 * comes next (hrpc_node_next_seq on hrpc_default_node(), the one addition to the original
 * API it uses), so it neither skips nor repeats one.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "hrpc.h"

#define MESSAGE_SIZE 64

static int g_port;
static int g_log = -1;

static struct sockaddr_in get_addr(int nid) {
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    if (nid == 1) {
        addr.sin_family = AF_INET;
        addr.sin_addr.s_addr = inet_addr("127.0.0.1");
        addr.sin_port = htons((uint16_t)g_port);
    }
    return addr;
}

/* Every log line is LINE bytes: a divisor of the page size, so no line straddles a page and
 * a kill cannot tear one (the kernel may stop a write between pages on SIGKILL). */
#define LINE 32

static void on_recv(int nid, void* message, unsigned int size) {
    uint64_t number;
    char line[LINE + 1];
    int n;
    if (nid != 2 || size != MESSAGE_SIZE) {
        n = snprintf(line, sizeof line, "bad %d %u", nid, size);
    } else {
        memcpy(&number, message, sizeof number);
        n = snprintf(line, sizeof line, "%031" PRIu64, number);
    }
    if (n < 0 || n > LINE - 1) {
        n = LINE - 1;
    }
    memset(line + n, ' ', (size_t)(LINE - 1 - n));
    line[LINE - 1] = '\n';
    n = LINE;
    if (write(g_log, line, (size_t)n) != n) {
        perror("write log");
        exit(3);
    }
}

static void on_ignore(int nid, void* message, unsigned int size) {
    (void)nid;
    (void)message;
    (void)size;
}

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void wait_fd(int fd, int timeout_ms) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    if (timeout_ms > 0) {
        (void)poll(&p, 1, timeout_ms);
    }
}

int main(int argc, char** argv) {
    int fd;
    if (argc != 5 && argc != 6) {
        fprintf(stderr, "usage: %s recv|send STORE PORT LOG|COUNT [RATE]\n", argv[0]);
        return 2;
    }
    g_port = atoi(argv[3]);
    if (strcmp(argv[1], "recv") == 0) {
        g_log = open(argv[4], O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (g_log < 0) {
            perror("open log");
            return 2;
        }
        fd = hrpc_init(argv[2], 1, g_port, get_addr);
        if (fd == 0) {
            fprintf(stderr, "recv: init failed: %s\n", hrpc_last_error_message());
            return 1;
        }
        printf("ready\n");
        fflush(stdout);
        for (;;) {
            int timeout = hrpc_once(on_recv);
            wait_fd(fd, timeout);
        }
    }
    if (strcmp(argv[1], "send") == 0) {
        uint64_t count = strtoull(argv[4], NULL, 10);
        uint64_t next = 0;
        uint64_t first;
        uint64_t rate = argc == 6 ? strtoull(argv[5], NULL, 10) : 0;
        long long start = now_ms();
        int done = 0;
        fd = hrpc_init(argv[2], 2, 0, get_addr);
        if (fd == 0) {
            fprintf(stderr, "send: init failed: %s\n", hrpc_last_error_message());
            return 1;
        }
        if (hrpc_node_next_seq(hrpc_default_node(), 1, &next) != HRPC_OK) {
            fprintf(stderr, "send: next seq: %s\n", hrpc_last_error_message());
            return 1;
        }
        first = next;
        printf("ready %" PRIu64 "\n", next);
        fflush(stdout);
        for (;;) {
            int i;
            int timeout;
            uint64_t allowed = count;
            if (rate > 0) {
                uint64_t budget = (uint64_t)(now_ms() - start) * rate / 1000 + 1;
                if (first - 1 + budget < allowed) {
                    allowed = first - 1 + budget;
                }
            }
            for (i = 0; i < 32 && next <= allowed; i++) {
                char* buf = hrpc_send(1, MESSAGE_SIZE);
                if (buf == NULL) {
                    break; /* backpressure: let hrpc_once make room */
                }
                memset(buf, 'x', MESSAGE_SIZE);
                memcpy(buf, &next, sizeof next);
                next++;
            }
            timeout = hrpc_once(on_ignore);
            if (next > allowed) {
                if (next > count && !done) {
                    printf("sent %" PRIu64 "\n", count);
                    fflush(stdout);
                    done = 1;
                }
                /* Paced: come back within a millisecond for the next batch. */
                wait_fd(fd, next > count || timeout < 1 ? timeout : 1);
            }
        }
    }
    fprintf(stderr, "unknown mode %s\n", argv[1]);
    return 2;
}
