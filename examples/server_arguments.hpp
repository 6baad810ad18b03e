// server_arguments.hpp — the shared command line (example_arguments.hpp)
// turned into a TcpServer: its options, and running it until a signal.
#pragma once

#include "example_arguments.hpp"

#include <anyloop/tcp/server.hpp>

#include <iostream>
#include <string>

namespace examples {

/// Server options listening on arguments.address(), other settings at their
/// defaults.
[[nodiscard]] inline anyloop::tcp::ServerOptions server_options(const ServerArguments& arguments) {
    anyloop::tcp::ServerOptions options;
    options.listeners = {{.address = arguments.address()}};
    return options;
}

/// Starts `server`, prints "listening on ADDRESS" for every bound address
/// (flushed: scripts wait for the first line), and runs the loop until
/// SIGTERM or SIGINT has shut the server down gracefully. Returns 0.
inline int serve(anyloop::tcp::TcpServer& server, anyloop::EventLoop& loop) {
    server.start();
    for (const std::string& address : server.addresses()) std::cout << "listening on " << address << "\n";
    std::cout.flush();
    server.handle_signals();
    loop.run();  // returns once the shutdown has finished
    return 0;
}

}  // namespace examples
