// raw_echo_libevent — a hand-written libevent echo server in libevent's own
// idiom: an evconnlistener accepts, each connection is a bufferevent, and the
// read callback moves the whole input buffer onto the output buffer
// (bufferevent_write_buffer moves the chains, it does not copy the bytes).
// SIGTERM/SIGINT break the loop through evsignal events.
//
// Usage: raw_echo_libevent [--host ADDR] [--port N]
#include "server_common.hpp"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include <csignal>

namespace {

void on_read(bufferevent* connection, void* /*context*/) {
    bufferevent_write_buffer(connection, bufferevent_get_input(connection));
}

void on_event(bufferevent* connection, short what, void* /*context*/) {
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) bufferevent_free(connection);
}

void on_accept(evconnlistener* listener, evutil_socket_t fd, sockaddr* /*address*/, int /*length*/,
               void* /*context*/) {
    bench::set_nodelay(fd);
    bufferevent* connection =
        bufferevent_socket_new(evconnlistener_get_base(listener), fd, BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(connection, on_read, nullptr, on_event, nullptr);
    bufferevent_enable(connection, EV_READ | EV_WRITE);
}

void on_stop_signal(evutil_socket_t /*signo*/, short /*what*/, void* base) {
    event_base_loopbreak(static_cast<event_base*>(base));
}

}  // namespace

int main(int argc, char** argv) {
    const bench::ServerOptions options = bench::parse_server_options(argc, argv);
    const int listen_fd = bench::listen_tcp(options);
    std::signal(SIGPIPE, SIG_IGN);  // bufferevents write with writev

    event_base* base = event_base_new();
    // backlog 0: the socket is already listening.
    evconnlistener* listener = evconnlistener_new(base, on_accept, nullptr, LEV_OPT_CLOSE_ON_FREE, 0, listen_fd);
    event* term = evsignal_new(base, SIGTERM, on_stop_signal, base);
    event* interrupt = evsignal_new(base, SIGINT, on_stop_signal, base);
    if (base == nullptr || listener == nullptr || term == nullptr || interrupt == nullptr) {
        std::fprintf(stderr, "libevent set-up failed\n");
        return 1;
    }
    event_add(term, nullptr);
    event_add(interrupt, nullptr);

    bench::announce_listening(listen_fd);
    event_base_dispatch(base);

    event_free(term);
    event_free(interrupt);
    evconnlistener_free(listener);
    event_base_free(base);
    return 0;
}
