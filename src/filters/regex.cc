// The RE2 side of filters/regex.h; the only C++ in the project. No exception leaves it:
// RE2 reports errors through its status, and allocation failure becomes NULL.
#include "filters/regex.h"

#include <re2/re2.h>

#include <cstdio>
#include <new>

namespace {

// Per compiled object (one per worker): what its automata may use before RE2 falls back
// to slower but still linear matching. Also caps what a hostile pattern can cost at load.
constexpr int64_t kMaxMemBytes = 2 << 20;

const uint8_t kEmpty[1] = {0};

}  // namespace

struct regex {
    re2::RE2 re;
    regex(const re2::StringPiece &p, const re2::RE2::Options &o) : re(p, o) {}
};

struct regex *regex_compile(const char *pattern, size_t len, char *msg,
                                       size_t msg_cap)
{
    re2::RE2::Options o;
    o.set_encoding(re2::RE2::Options::EncodingLatin1);  // raw bytes, as the packet is
    o.set_longest_match(false);                         // leftmost-first, as Rust's crate
    o.set_log_errors(false);
    o.set_max_mem(kMaxMemBytes);
    regex *r = new (std::nothrow) regex(re2::StringPiece(pattern, len), o);
    if (!r) {
        std::snprintf(msg, msg_cap, "out of memory");
        return nullptr;
    }
    if (!r->re.ok()) {
        if (r->re.error_arg().empty())
            std::snprintf(msg, msg_cap, "%s", r->re.error().c_str());
        else
            std::snprintf(msg, msg_cap, "%s: %s", r->re.error().c_str(),
                          r->re.error_arg().c_str());
        delete r;
        return nullptr;
    }
    return r;
}

bool regex_find(const struct regex *r, const uint8_t *text, size_t len, size_t pos,
                           size_t *start, size_t *end)
{
    if (pos > len)
        return false;
    const char *base = reinterpret_cast<const char *>(len ? text : kEmpty);
    re2::StringPiece subject(base, len), m;
    if (!r->re.Match(subject, pos, len, re2::RE2::UNANCHORED, &m, 1))
        return false;
    *start = static_cast<size_t>(m.data() - base);
    *end = *start + m.size();
    return true;
}

void regex_free(struct regex *r)
{
    delete r;
}
