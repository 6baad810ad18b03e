// rot13_server — POE::Component::Server::TCP's synopsis: answers each line
// with its rot13.
//
//   rot13_server [--backend NAME] [--host ADDR] [--port N]
//
// Prints "listening on HOST:PORT" first; exits 0 on SIGTERM or SIGINT once
// every connection has flushed its answers.
#include "server_arguments.hpp"

#include <iostream>

using namespace anyloop::tcp;

namespace {

std::string rot13(std::string_view line) {
    std::string out(line);
    for (char& c : out) {
        if (c >= 'a' && c <= 'z') c = static_cast<char>('a' + (c - 'a' + 13) % 26);
        else if (c >= 'A' && c <= 'Z') c = static_cast<char>('A' + (c - 'A' + 13) % 26);
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) try {
    const examples::ServerArguments arguments = examples::parse_server_arguments(argc, argv);
    auto loop = arguments.make_loop();
    TcpServer server(*loop, examples::server_options(arguments));  // the default filter: lines in, lines out
    server.on_input([](Connection& connection, std::string_view line) { connection.send(rot13(line)); });
    return examples::serve(server, *loop);
} catch (const std::exception& error) {
    return examples::fail("rot13_server", error);
}
