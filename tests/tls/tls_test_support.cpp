#include "tls/tls_test_support.hpp"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <system_error>

namespace anyloop::test {
namespace {

namespace fs = std::filesystem;

// The stamp is written last, so a set without it is incomplete.
constexpr const char* kStamp = "complete";

bool usable(const fs::path& dir, const fs::path& script) {
    std::error_code ec;
    const auto stamp_time = fs::last_write_time(dir / kStamp, ec);
    if (ec) return false;
    const auto script_time = fs::last_write_time(script, ec);
    if (ec || stamp_time < script_time) return false;
    return fs::file_time_type::clock::now() - stamp_time < std::chrono::hours(24 * 30);
}

TestCertificates make_certificates() {
    const fs::path script = ANYLOOP_TLS_MAKE_CERTS;
    const fs::path dir = ANYLOOP_TLS_CERT_CACHE;
    if (usable(dir, script)) return {dir};

    // Made in a private directory, then renamed into place, so concurrent
    // test processes never see half a set.
    const std::string pid = std::to_string(::getpid());
    const fs::path staging = dir.string() + ".tmp." + pid;
    const fs::path log = dir.string() + ".log." + pid;
    fs::remove_all(staging);
    fs::create_directories(staging.parent_path());
    const std::string command =
        "bash '" + script.string() + "' '" + staging.string() + "' > '" + log.string() + "' 2>&1";
    if (std::system(command.c_str()) != 0) {
        std::ifstream in(log);
        std::stringstream output;
        output << in.rdbuf();
        fs::remove_all(staging);
        fs::remove(log);
        throw std::runtime_error("make_certs.sh failed: " + output.str());
    }
    fs::remove(log);
    std::ofstream(staging / kStamp) << "made by the test support\n";

    std::error_code ec;
    if (fs::exists(dir, ec) && !usable(dir, script)) {
        const fs::path old = dir.string() + ".old." + pid;
        fs::rename(dir, old, ec);
        fs::remove_all(old, ec);
    }
    fs::rename(staging, dir, ec);
    if (ec) fs::remove_all(staging);  // another process was faster; its set is as good
    if (!usable(dir, script)) throw std::runtime_error("test certificates missing in " + dir.string());
    return {dir};
}

}  // namespace

const TestCertificates& test_certificates() {
    static const TestCertificates certificates = make_certificates();
    return certificates;
}

std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::stringstream text;
    text << in.rdbuf();
    return text.str();
}

}  // namespace anyloop::test
