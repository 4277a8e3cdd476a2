// The handle API from C++: two nodes in one process on loopback. The client sends numbered
// messages (zero-copy with hrpc_node_send, and copied with hrpc_node_send_copy), the server
// checks they arrive once and in order, then both close.
//
//   g++ -std=c++17 handle_api.cpp -I../include -o handle_api
//       ../../target/release/libhrpc_capi.a -lpthread -ldl -lm -lrt
//   ./handle_api [port] [store-dir]
#include <arpa/inet.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "hrpc.h"

namespace {

struct Server {
    uint64_t expected = 1;  // next number
    uint64_t received = 0;
    bool out_of_order = false;
};

int resolve(void* ctx, uint32_t node_id, struct sockaddr_in* addr) {
    const uint16_t port = *static_cast<const uint16_t*>(ctx);
    if (node_id != 1) {
        return 0;
    }
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr->sin_port = htons(port);
    return 1;
}

void on_message(void* ctx, uint32_t peer, uint64_t seq, const void* data, size_t len) {
    auto* server = static_cast<Server*>(ctx);
    uint64_t number = 0;
    if (peer != 2 || len < sizeof number) {
        server->out_of_order = true;
        return;
    }
    std::memcpy(&number, data, sizeof number);
    if (number != server->expected || seq != number) {
        server->out_of_order = true;
    }
    server->expected = number + 1;
    server->received++;
}

int fail(const char* what) {
    std::fprintf(stderr, "handle_api: %s: %s (%s)\n", what, hrpc_last_error_message(),
                 hrpc_strerror(hrpc_last_error()));
    return 1;
}

}  // namespace

int main(int argc, char** argv) {
    uint16_t port = argc > 1 ? static_cast<uint16_t>(std::atoi(argv[1])) : 5690;
    const std::string dir = argc > 2 ? argv[2] : "./handle_api_store";
    const std::string server_store = dir + "/server";
    const std::string client_store = dir + "/client";
    const uint64_t total = 10000;

    hrpc_config config;
    hrpc_config_init(&config, server_store.c_str(), 1);
    config.bind_ip = "127.0.0.1";
    config.bind_port = port;
    hrpc_node* server = nullptr;
    if (hrpc_node_open(&config, &server) != HRPC_OK) {
        return fail("open server");
    }
    hrpc_config_init(&config, client_store.c_str(), 2);
    config.bind_ip = "127.0.0.1";
    config.resolve = resolve;
    config.resolve_ctx = &port;
    config.send_block_ms = 1000;
    hrpc_node* client = nullptr;
    if (hrpc_node_open(&config, &client) != HRPC_OK) {
        return fail("open client");
    }

    uint64_t next = 0;
    if (hrpc_node_next_seq(client, 1, &next) != HRPC_OK) {
        return fail("next seq");
    }
    Server state;
    state.expected = next;
    const uint64_t first = next;
    for (int round = 0; round < 20000 && state.received < total; round++) {
        for (int i = 0; i < 64 && next < first + total; i++) {
            if (next % 2 == 0) {
                void* buf = hrpc_node_send(client, 1, 100);
                if (buf == nullptr) {
                    break;  // backpressure: poll first
                }
                std::memset(buf, 0, 100);
                std::memcpy(buf, &next, sizeof next);
            } else {
                unsigned char msg[100] = {0};
                std::memcpy(msg, &next, sizeof next);
                if (hrpc_node_send_copy(client, 1, msg, sizeof msg, nullptr) != HRPC_OK) {
                    break;
                }
            }
            next++;
        }
        if (hrpc_node_poll(client, on_message, &state) < 0) {
            return fail("poll client");
        }
        if (hrpc_node_poll(server, on_message, &state) < 0) {
            return fail("poll server");
        }
        if (hrpc_node_wait(server, 1) != HRPC_OK) {
            return fail("wait");
        }
    }

    hrpc_stats stats;
    if (hrpc_node_stats(server, &stats) != HRPC_OK) {
        return fail("stats");
    }
    hrpc_node_close(client, 100);
    hrpc_node_close(server, 100);
    std::printf("handle_api: %llu of %llu messages, %s, %llu delivered by the server\n",
                static_cast<unsigned long long>(state.received),
                static_cast<unsigned long long>(total),
                state.out_of_order ? "OUT OF ORDER" : "in order",
                static_cast<unsigned long long>(stats.messages_delivered));
    return state.received == total && !state.out_of_order ? 0 : 1;
}
