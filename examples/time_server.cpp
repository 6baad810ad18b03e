// time_server — perlipc's first TCP server: greets each client with
// "Hello there, HOST, it's now TIME" and hangs up.
//
//   time_server [--backend NAME] [--host ADDR] [--port N]
//
// Prints "listening on HOST:PORT" first; exits 0 on SIGTERM or SIGINT.
#include "server_arguments.hpp"

#include <ctime>
#include <iostream>

using namespace anyloop::tcp;

int main(int argc, char** argv) try {
    const examples::ServerArguments arguments = examples::parse_server_arguments(argc, argv);
    auto loop = arguments.make_loop();
    TcpServer server(*loop, examples::server_options(arguments));
    server.on_connected([](Connection& connection) {
        const std::time_t now = std::time(nullptr);
        char when[64];
        std::strftime(when, sizeof when, "%a %b %e %H:%M:%S %Y", std::localtime(&now));
        connection.send("Hello there, " + connection.remote_address() + ", it's now " + when);
        connection.shutdown();  // the greeting goes out, then the connection closes
    });
    return examples::serve(server, *loop);
} catch (const std::exception& error) {
    return examples::fail("time_server", error);
}
