// Runs a timer on every backend the installed anyloop offers.
#include <anyloop/backends/registry.hpp>
#include <anyloop/core/event_loop.hpp>

#include <cstdio>

int main() {
    int fired = 0;
    for (const std::string& name : anyloop::available_backends()) {
        auto loop = anyloop::make_loop(name);
        anyloop::TimerWatcher timer = loop->timer(std::chrono::milliseconds(1), [&] { ++fired; });
        loop->run();
        std::printf("%s: ok\n", name.c_str());
    }
    return fired == static_cast<int>(anyloop::available_backends().size()) ? 0 : 1;
}
