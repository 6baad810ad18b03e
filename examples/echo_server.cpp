// echo_server — an echo server built on TcpServer.
//
//   echo_server [--backend NAME] [--host ADDR] [--port N] [--listen ADDR]...
//               [--concurrency N] [--workers N] [--idle-timeout SECS]
//               [--allow REGEX]... [--deny REGEX]...
//               [--cidr-allow CIDR]... [--cidr-deny CIDR]... [--proxy-protocol]
//
// Listens on ADDR:N (default 127.0.0.1, port 0 = any free port) and on each
// --listen address ("host:port", "[v6]:port", "port", "unix:/path"; given
// alone, --listen replaces the default), prints "listening on HOST:PORT" for
// each as its first lines, and sends every byte back as it arrives, so line
// clients and raw clients alike are served. On SIGTERM or SIGINT it stops
// accepting, lets each connection flush what it still has queued, and
// exits 0.
#include "server_arguments.hpp"

#include <iostream>

using namespace anyloop;
using namespace anyloop::tcp;

int main(int argc, char** argv) try {
    ServerOptions options;
    std::vector<std::string> listen;
    bool proxy_protocol = false;
    const examples::ServerArguments arguments =
        examples::parse_server_arguments(argc, argv, [&](const std::string& option, const auto& value) {
            if (option == "--listen") listen.push_back(value());
            else if (option == "--concurrency") options.concurrency = std::stoi(value());
            else if (option == "--workers") options.workers = static_cast<unsigned>(std::stoul(value()));
            else if (option == "--idle-timeout") options.idle_timeout = std::chrono::duration_cast<Duration>(
                                                     std::chrono::duration<double>(std::stod(value())));
            else if (option == "--allow") options.access.allow(value());
            else if (option == "--deny") options.access.deny(value());
            else if (option == "--cidr-allow") options.access.cidr_allow(value());
            else if (option == "--cidr-deny") options.access.cidr_deny(value());
            else if (option == "--proxy-protocol") proxy_protocol = true;
            else return false;
            return true;
        });
    std::unique_ptr<EventLoop> loop = arguments.make_loop();

    if (listen.empty() || arguments.host_or_port_given) options.listeners.push_back({.address = arguments.address()});
    for (const std::string& address : listen) options.listeners.push_back({.address = address});
    for (ListenerOptions& listener : options.listeners) listener.proxy_protocol = proxy_protocol;
    // Bytes in, bytes out: each chunk read is a record, sent back unchanged.
    options.input_filter = std::make_shared<StreamFilter>();
    // Backpressure: a client that sends but does not read makes us stop
    // reading from it once 1 MiB of echo waits for it.
    options.handle.high_water_mark = 1 << 20;
    // Workers run loops of the same backend as this one.
    const std::string backend(loop->backend());
    options.worker_loop = [backend] { return make_loop(backend); };

    TcpServer server(*loop, std::move(options));
    server.on_input([](Connection& connection, std::string_view bytes) { connection.send(bytes); });
    std::cerr << "echo_server: backend " << loop->backend() << "\n";
    return examples::serve(server, *loop);
} catch (const std::exception& error) {
    return examples::fail("echo_server", error,
                          "[--backend NAME] [--host ADDR] [--port N] [--listen ADDR]... [--concurrency N]\n"
                          "    [--workers N] [--idle-timeout SECS] [--allow REGEX]... [--deny REGEX]...\n"
                          "    [--cidr-allow CIDR]... [--cidr-deny CIDR]... [--proxy-protocol]");
}
