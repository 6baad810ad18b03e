// line_client — sends standard input to a server line by line and prints
// the lines it sends back.
//
//   line_client HOST PORT [--backend NAME]
//
// Connects with tcp_connect (HOST may be a name), then reads standard input
// through a second Handle, so replies are printed while you type. Exits 0
// once standard input has ended and every line sent got its reply line (or
// the server closed the connection); 1 on a connection error.
#include <anyloop/backends/registry.hpp>
#include <anyloop/handle/connect.hpp>
#include <anyloop/handle/handle.hpp>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <functional>
#include <iostream>
#include <memory>
#include <stdexcept>
#include <string>

using namespace anyloop;

int main(int argc, char** argv) try {
    if (argc != 3 && !(argc == 5 && std::string(argv[3]) == "--backend"))
        throw std::invalid_argument("expected HOST PORT [--backend NAME]");
    const std::string host = argv[1];
    const unsigned long port = std::stoul(argv[2]);
    if (port == 0 || port > 65535) throw std::invalid_argument("bad port " + std::string(argv[2]));
    std::unique_ptr<EventLoop> loop = argc == 5 ? make_loop(argv[4]) : make_loop();

    std::unique_ptr<Handle> server;  // the connection
    std::unique_ptr<Handle> input;   // standard input
    long sent = 0;
    long replies = 0;
    bool input_done = false;
    int status = 0;

    // Destroying both Handles ends the program: nothing keeps the loop alive.
    auto finish = [&] {
        input.reset();
        server.reset();
    };
    auto finish_if_answered = [&] {
        if (input_done && replies >= sent) finish();
    };
    auto send_line = [&](std::string_view line) {
        server->push_write(std::string(line) + "\n");
        ++sent;
    };

    // The two readers queue themselves again after each line, so they live
    // here, as long as the program.
    std::function<void(Handle&, std::string_view)> print_reply = [&](Handle& h, std::string_view line) {
        std::cout << line << std::endl;
        ++replies;
        h.push_read(Reader::line(print_reply));
        finish_if_answered();
    };
    std::function<void(Handle&, std::string_view)> forward = [&](Handle& h, std::string_view line) {
        send_line(line);
        h.push_read(Reader::line(forward));
    };

    auto on_connected = [&](std::unique_ptr<Handle> connection, std::error_code, const std::string& message) {
        if (!connection) {
            std::cerr << "line_client: " << message << "\n";
            status = 1;
            return;
        }
        server = std::move(connection);
        server->on_error([&](Handle&, std::error_code, const std::string& text, bool fatal) {
            std::cerr << "line_client: " << text << "\n";
            if (fatal) {
                status = 1;
                finish();
            }
        });
        server->on_eof([&](Handle&) { finish(); });  // the server closed: nothing more will come
        server->push_read(Reader::line(print_reply));

        // Standard input. A regular file cannot be watched by every backend
        // (epoll refuses it) and never blocks, so it is read at once; a
        // pipe or terminal gets a Handle of its own.
        struct stat info {};
        if (::fstat(STDIN_FILENO, &info) == 0 && S_ISREG(info.st_mode)) {
            for (std::string line; std::getline(std::cin, line);) send_line(line);
            input_done = true;
            finish_if_answered();
            return;
        }
        // A duplicate, so that closing the Handle leaves fd 0 alone.
        input = std::make_unique<Handle>(*loop, ::fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 3));
        input->push_read(Reader::line(forward));
        input->on_eof([&](Handle&) {
            input_done = true;
            finish_if_answered();
        });
    };

    const int stdin_flags = ::fcntl(STDIN_FILENO, F_GETFL);
    ConnectRequest request = tcp_connect(*loop, host, static_cast<std::uint16_t>(port), {}, on_connected);
    loop->run();
    // The Handle made the shared file description non-blocking; the shell
    // that started us shares it too.
    if (stdin_flags >= 0) ::fcntl(STDIN_FILENO, F_SETFL, stdin_flags);
    return status;
} catch (const std::exception& error) {
    std::cerr << "line_client: " << error.what() << "\n"
              << "usage: line_client HOST PORT [--backend NAME]\n";
    return 2;
}
