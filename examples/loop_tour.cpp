// loop_tour: one pass over everything an EventLoop does, on any backend.
//
//   loop_tour [--backend NAME]
//
// A repeating timer ticks; on the second tick the program sends itself
// SIGUSR1, which a signal watcher receives in loop context; a worker thread
// post()s a message into the loop; and a raw I/O watcher echoes bytes across
// a socketpair. Every event is printed as it happens; the program exits 0
// once everything is done, because nothing is left to keep the loop alive.
#include <anyloop/backends/registry.hpp>

#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>
#include <string_view>
#include <thread>

using namespace std::chrono_literals;

int main(int argc, char** argv) try {
    std::string backend(anyloop::default_backend());
    for (int i = 1; i < argc; ++i) {
        if (std::string_view(argv[i]) == "--backend" && i + 1 < argc) {
            backend = argv[++i];
        } else {
            std::fprintf(stderr, "usage: %s [--backend NAME]\n", argv[0]);
            return 2;
        }
    }
    auto loop = anyloop::make_loop(backend);
    std::printf("backend: %s\n", std::string(loop->backend()).c_str());

    // 1. A repeating timer: three ticks, 20 ms apart.
    int ticks = 0;
    anyloop::TimerWatcher tick;
    tick = loop->timer(20ms, 20ms, [&] {
        std::printf("timer: tick %d\n", ++ticks);
        if (ticks == 2) ::raise(SIGUSR1);  // 2. handled below, in loop context
        if (ticks == 3) tick.stop();
    });

    anyloop::SignalWatcher usr1 = loop->signal(SIGUSR1, [&](int signo) {
        std::printf("signal: %s received in the loop\n", signo == SIGUSR1 ? "SIGUSR1" : "?");
        usr1.stop();
    });

    // 3. post() is the one thread-safe door into a loop.
    std::thread worker([&] { loop->post([] { std::printf("post: hello from another thread\n"); }); });

    // 4. Echo over a socketpair with raw I/O watchers: the "server" end
    //    echoes what it reads; the "client" end prints the echo and closes.
    int fds[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) != 0) {
        std::perror("socketpair");
        return 1;
    }
    const int server = fds[0];
    const int client = fds[1];
    anyloop::IoWatcher echo = loop->io(server, anyloop::Io::read, [&](anyloop::Io) {
        char buf[256];
        const ssize_t n = ::read(server, buf, sizeof buf);
        if (n > 0) {
            std::printf("echo: server got %zd bytes, sending them back\n", n);
            [[maybe_unused]] ssize_t w = ::write(server, buf, static_cast<size_t>(n));
        } else {
            std::printf("echo: client closed, server done\n");
            echo.stop();
        }
    });
    anyloop::IoWatcher reply = loop->io(client, anyloop::Io::read, [&](anyloop::Io) {
        char buf[256];
        const ssize_t n = ::read(client, buf, sizeof buf);
        if (n > 0) std::printf("echo: client got back \"%.*s\"\n", static_cast<int>(n), buf);
        reply.stop();
        ::shutdown(client, SHUT_WR);  // the server sees end-of-file
    });
    const char hello[] = "hello, loop";
    [[maybe_unused]] ssize_t w = ::write(client, hello, std::strlen(hello));

    loop->run();  // returns when no watcher is left active
    worker.join();
    loop->run_once(false);  // in case the post raced the last watcher
    ::close(server);
    ::close(client);
    std::printf("done: nothing left to watch, run() returned\n");
    return 0;
} catch (const std::exception& error) {
    std::fprintf(stderr, "loop_tour: %s\n", error.what());
    return 1;
}
