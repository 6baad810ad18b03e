// The registry maps names to the factories of the backends this build has.
// ANYLOOP_HAVE_<BACKEND> and ANYLOOP_DEFAULT_BACKEND_NAME come from CMake.
#include <anyloop/backends/registry.hpp>

#ifdef ANYLOOP_HAVE_LIBEV
#include <anyloop/backends/libev.hpp>
#endif
#ifdef ANYLOOP_HAVE_LIBEVENT
#include <anyloop/backends/libevent.hpp>
#endif
#ifdef ANYLOOP_HAVE_ASIO
#include <anyloop/backends/asio.hpp>
#endif
#ifdef ANYLOOP_HAVE_POLL
#include <anyloop/backends/poll.hpp>
#endif
#ifdef ANYLOOP_HAVE_SELECT
#include <anyloop/backends/select.hpp>
#endif
#ifdef ANYLOOP_HAVE_EPOLL
#include <anyloop/backends/epoll.hpp>
#endif

#include <stdexcept>

namespace anyloop {
namespace {

struct Entry {
    std::string_view name;
    std::unique_ptr<EventLoop> (*factory)();
};

constexpr Entry entries[] = {
#ifdef ANYLOOP_HAVE_EPOLL
    {"epoll", [] { return make_epoll_loop(); }},
#endif
#ifdef ANYLOOP_HAVE_LIBEV
    {"libev", [] { return make_libev_loop(); }},
#endif
#ifdef ANYLOOP_HAVE_LIBEVENT
    {"libevent", [] { return make_libevent_loop(); }},
#endif
#ifdef ANYLOOP_HAVE_ASIO
    {"asio", [] { return make_asio_loop(); }},
#endif
#ifdef ANYLOOP_HAVE_POLL
    {"poll", [] { return make_poll_loop(); }},
#endif
#ifdef ANYLOOP_HAVE_SELECT
    {"select", [] { return make_select_loop(); }},
#endif
};

}  // namespace

std::string_view default_backend() noexcept { return ANYLOOP_DEFAULT_BACKEND_NAME; }

std::vector<std::string> available_backends() {
    std::vector<std::string> names{std::string(default_backend())};
    for (const Entry& entry : entries)
        if (entry.name != default_backend()) names.emplace_back(entry.name);
    return names;
}

std::unique_ptr<EventLoop> make_loop(std::string_view backend) {
    for (const Entry& entry : entries)
        if (entry.name == backend) return entry.factory();
    std::string built;
    for (const std::string& name : available_backends()) built += (built.empty() ? "" : ", ") + name;
    throw std::invalid_argument("unknown event loop backend \"" + std::string(backend) + "\"; this build has: " + built);
}

std::unique_ptr<EventLoop> make_loop() { return make_loop(default_backend()); }

}  // namespace anyloop
