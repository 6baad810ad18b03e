// adopt_libevent — a program that already runs a libevent loop gains anyloop
// watchers without changing how it runs that loop.
//
// The host half is plain libevent C: event_base_new(), a timer event of its
// own, event_base_dispatch(). anyloop adopts the base, and its timer and its
// echo over a socketpair fire inside the host's dispatch. The dispatch
// returns by itself once neither side has anything left to do.
//
// Expected output (host ticks and anyloop lines may interleave differently):
//   host: tick 1
//   anyloop: timer fired, sending "hello"
//   anyloop: echoing 5 bytes
//   anyloop: the echo came back: "hello"
//   host: tick 2
//   host: tick 3
//   host: event_base_dispatch returned 1 (nothing left to run)
#include <anyloop/backends/libevent.hpp>

#include <event2/event.h>

#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>

namespace {

// ---- the host program's own event: a timer that ticks three times --------

struct Ticker {
    struct event* event = nullptr;
    int ticks = 0;
};

void on_host_tick(evutil_socket_t, short, void* arg) {
    auto* ticker = static_cast<Ticker*>(arg);
    std::printf("host: tick %d\n", ++ticker->ticks);
    if (ticker->ticks == 3) event_del(ticker->event);
}

}  // namespace

int main() {
    using namespace std::chrono_literals;

    // The host's setup, as it was before anyloop came along.
    struct event_base* base = event_base_new();
    Ticker ticker;
    ticker.event = event_new(base, -1, EV_PERSIST, on_host_tick, &ticker);
    const timeval every{0, 40'000};
    event_add(ticker.event, &every);

    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return 1;
    const int server = fds[0];
    const int client = fds[1];
    std::string reply;
    {
        // anyloop joins the host's base; it never runs or frees it.
        auto loop = anyloop::make_libevent_loop(base);

        // An echo server on one end of the pair...
        anyloop::IoWatcher echo = loop->io(server, anyloop::Io::read, [&](anyloop::Io) {
            char buffer[256];
            const ssize_t n = ::read(server, buffer, sizeof buffer);
            if (n <= 0) return;
            std::printf("anyloop: echoing %zd bytes\n", n);
            [[maybe_unused]] ssize_t written = ::write(server, buffer, static_cast<size_t>(n));
        });
        // ...a client on the other, which tears both down once the echo is
        // back: then anyloop no longer keeps the host's dispatch running.
        anyloop::IoWatcher reader;
        reader = loop->io(client, anyloop::Io::read, [&](anyloop::Io) {
            char buffer[256];
            const ssize_t n = ::read(client, buffer, sizeof buffer);
            if (n > 0) reply.append(buffer, static_cast<size_t>(n));
            if (reply.size() < 5) return;
            std::printf("anyloop: the echo came back: \"%s\"\n", reply.c_str());
            echo.reset();
            reader.reset();  // safe inside its own callback
        });
        // A timer that starts the exchange.
        anyloop::TimerWatcher timer = loop->timer(50ms, [&] {
            std::printf("anyloop: timer fired, sending \"hello\"\n");
            [[maybe_unused]] ssize_t written = ::write(client, "hello", 5);
        });

        // The host runs its loop exactly as before.
        const int result = event_base_dispatch(base);
        std::printf("host: event_base_dispatch returned %d%s\n", result,
                    result == 1 ? " (nothing left to run)" : "");
    }  // the wrapper goes first; the base is still the host's

    event_free(ticker.event);
    ::close(server);
    ::close(client);
    event_base_free(base);
    return reply == "hello" && ticker.ticks == 3 ? 0 : 1;
}
