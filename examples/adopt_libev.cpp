// adopt_libev: a libev program gains anyloop watchers without changing how it
// runs its loop.
//
// Everything about the loop is plain libev: the program creates it, starts a
// timer of its own and calls ev_run(loop, 0), which returns when no watcher is
// left. Wrapping the loop with anyloop::make_libev_loop(loop) lets anyloop code
// (here a timer and an echo over a socketpair) run inside that same ev_run.
#include <anyloop/backends/libev.hpp>

#include <ev.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

using namespace std::chrono_literals;

// The host's own watcher, written against libev's C API.
static void host_timer_fired(struct ev_loop*, ev_timer*, int) {
    std::puts("host:    its own ev_timer fired");
}

int main() {
    struct ev_loop* loop = ev_loop_new(EVFLAG_AUTO);
    if (loop == nullptr) return 1;
    ev_timer host_timer;
    ev_timer_init(&host_timer, host_timer_fired, 0.05, 0.);
    ev_timer_start(loop, &host_timer);

    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) return 1;

    {
        // The wrapper borrows the loop: it never runs or destroys it.
        auto any = anyloop::make_libev_loop(loop);

        anyloop::TimerWatcher timer = any->timer(20ms, [] { std::puts("anyloop: timer fired"); });

        // fds[0] echoes what it reads; fds[1] prints the echo, then both stop.
        anyloop::IoWatcher echo;
        anyloop::IoWatcher client;
        echo = any->io(fds[0], anyloop::Io::read, [&](anyloop::Io) {
            char buffer[64];
            const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
            if (n <= 0) return;
            std::printf("anyloop: echoing \"%.*s\"\n", static_cast<int>(n), buffer);
            [[maybe_unused]] ssize_t written = ::write(fds[0], buffer, static_cast<std::size_t>(n));
        });
        client = any->io(fds[1], anyloop::Io::read, [&](anyloop::Io) {
            char buffer[64];
            const ssize_t n = ::read(fds[1], buffer, sizeof buffer);
            if (n <= 0) return;
            std::printf("anyloop: the echo came back: \"%.*s\"\n", static_cast<int>(n), buffer);
            client.reset();  // safe inside its own callback
            echo.reset();
        });
        [[maybe_unused]] ssize_t sent = ::write(fds[1], "hello", 5);

        // The host runs its loop as it always did. Active anyloop watchers
        // keep it running like watchers of its own; anyloop's internals don't,
        // so it returns once the host's timer and the anyloop work are done.
        ev_run(loop, 0);
        std::puts("host:    ev_run returned");
    }  // the wrapper goes; the host's loop is left intact

    ::close(fds[0]);
    ::close(fds[1]);
    ev_loop_destroy(loop);
    return 0;
}
