#include <frugal/budget_store.hpp>

#include <frugal/error.hpp>

#include "budget/process_quota_store.hpp"

#include <sqlite3.h>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <charconv>
#include <system_error>

namespace frugal {

namespace {

using boost::system::error_code;

class statement {
public:
    statement() = default;
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;
    ~statement() { sqlite3_finalize(s_); }

    int prepare(sqlite3* db, const char* sql)
    {
        return sqlite3_prepare_v3(db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_, nullptr);
    }
    sqlite3_stmt* get() const noexcept { return s_; }

    void bind(int i, std::int64_t v) { sqlite3_bind_int64(s_, i, v); }
    void bind(int i, std::string_view v)
    {
        sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    }
    int step() { return sqlite3_step(s_); }
    void reset()
    {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    std::int64_t int64(int col) const { return sqlite3_column_int64(s_, col); }
    std::string text(int col) const
    {
        const auto* p = sqlite3_column_text(s_, col);
        return p == nullptr ? std::string()
                            : std::string(
                                  reinterpret_cast<const char*>(p),
                                  static_cast<std::size_t>(sqlite3_column_bytes(s_, col)));
    }

private:
    sqlite3_stmt* s_ = nullptr;
};

// Charges as one text column: "<window> <length>:<name>;" per budget, so any name survives.
std::string encode_charges(std::span<const budget_charge_view> charges)
{
    std::string out;
    for (const auto& c : charges) {
        out += std::to_string(c.window);
        out += ' ';
        out += std::to_string(c.budget.size());
        out += ':';
        out += c.budget;
        out += ';';
    }
    return out;
}

bool decode_charges(std::string_view text, money amount, std::vector<budget_charge>& out)
{
    out.clear();
    while (!text.empty()) {
        budget_charge c;
        std::size_t len = 0;
        const auto sp = text.find(' ');
        if (sp == std::string_view::npos)
            return false;
        if (std::from_chars(text.data(), text.data() + sp, c.window).ec != std::errc())
            return false;
        text.remove_prefix(sp + 1);
        const auto colon = text.find(':');
        if (colon == std::string_view::npos ||
            std::from_chars(text.data(), text.data() + colon, len).ec != std::errc() ||
            colon + 1 + len + 1 > text.size() || text[colon + 1 + len] != ';')
            return false;
        c.budget = std::string(text.substr(colon + 1, len));
        c.amount = amount;
        out.push_back(std::move(c));
        text.remove_prefix(colon + 1 + len + 1);
    }
    return true;
}

constexpr const char* schema = R"sql(
CREATE TABLE IF NOT EXISTS spend(
    budget TEXT NOT NULL, window INTEGER NOT NULL, committed INTEGER NOT NULL,
    PRIMARY KEY(budget, window)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS reservations(
    id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, request_id INTEGER NOT NULL,
    model TEXT NOT NULL, generation_id TEXT NOT NULL, amount INTEGER NOT NULL,
    charges TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS ledger(
    id INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, request_id INTEGER NOT NULL,
    generation_id TEXT NOT NULL, tier INTEGER NOT NULL, model_asked TEXT NOT NULL,
    model_served TEXT NOT NULL, provider TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL, cost INTEGER NOT NULL, outcome TEXT NOT NULL,
    estimated INTEGER NOT NULL, latency_us INTEGER NOT NULL, keys TEXT NOT NULL,
    reservation_id INTEGER NOT NULL, charges TEXT NOT NULL, reason TEXT NOT NULL DEFAULT '',
    anomaly TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS ledger_time ON ledger(time_ms);
CREATE TABLE IF NOT EXISTS notes(
    key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS answers(
    id TEXT PRIMARY KEY, answer TEXT NOT NULL) WITHOUT ROWID;
)sql";

class sqlite_store final : public detail::process_quota_store {
public:
    ~sqlite_store() override
    {
        // close_v2 waits for the statements, finalized after this body, to close the file.
        sqlite3_close_v2(db_);
        if (lock_fd_ >= 0)
            ::close(lock_fd_);
    }

    error_code open(const sqlite_store_params& p, std::string& detail)
    {
        if (p.read_only) {
            read_only_ = true;
            // A reader needs no lock (WAL gives it the last committed transaction) and must not
            // create or change the file.
            if (sqlite3_open_v2(
                    p.path.c_str(), &db_, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr) !=
                SQLITE_OK)
                return fail(detail, "cannot open " + p.path);
            sqlite3_busy_timeout(db_, 5000);
            if (!has_table("ledger"))
                return fail(detail, p.path + " is not a frugal ledger");
            has_reason_ = has_column("ledger", "reason");
            has_anomaly_ = has_column("ledger", "anomaly");
            has_notes_ = has_table("notes");
            // One read transaction for the store's life: a report's spend, records and notes
            // come from one committed state, whatever the owner commits meanwhile.
            if (exec("BEGIN"))
                return fail(detail, "cannot read " + p.path);
            return {};
        }
        // One owner at a time: the guard decides from memory, so two processes writing one
        // file would each spend the same headroom.
        const auto lock_path = p.path + ".lock";
        lock_fd_ = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock_fd_ < 0) {
            detail = "cannot create " + lock_path + ": " +
                     std::error_code(errno, std::generic_category()).message();
            return error::budget_store_failed;
        }
        if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
            detail = p.path + " is in use by another process";
            return error::budget_store_failed;
        }
        if (sqlite3_open_v2(
                p.path.c_str(), &db_,
                SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                nullptr) != SQLITE_OK)
            return fail(detail, "cannot open " + p.path);
        sqlite3_busy_timeout(db_, 5000);
        const std::string pragmas =
            std::string("PRAGMA journal_mode=WAL; PRAGMA synchronous=") +
            (p.durability == sqlite_durability::power_loss ? "FULL" : "NORMAL") + ";";
        if (exec(pragmas.c_str()) || exec(schema))
            return fail(detail, "cannot set up " + p.path);
        // Files written before the ledger kept the escalation reason or the anomaly gain the
        // columns.
        if (!has_column("ledger", "reason") &&
            exec("ALTER TABLE ledger ADD COLUMN reason TEXT NOT NULL DEFAULT ''"))
            return fail(detail, "cannot upgrade " + p.path);
        if (!has_column("ledger", "anomaly") &&
            exec("ALTER TABLE ledger ADD COLUMN anomaly TEXT NOT NULL DEFAULT ''"))
            return fail(detail, "cannot upgrade " + p.path);
        struct {
            statement* s;
            const char* sql;
        } const stmts[] = {
            {&reserve_, "INSERT INTO reservations VALUES(?1,?2,?3,?4,'',?5,?6)"},
            {&note_, "UPDATE reservations SET generation_id=?2 WHERE id=?1"},
            {&release_, "DELETE FROM reservations WHERE id=?1"},
            {&insert_ledger_,
             "INSERT INTO ledger(time_ms, request_id, generation_id, tier, model_asked, "
             "model_served, provider, prompt_tokens, completion_tokens, cost, outcome, "
             "estimated, latency_us, keys, reservation_id, charges, reason, anomaly) "
             "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15,?16,?17,?18)"},
            {&put_note_, "INSERT INTO notes VALUES(?1,?2) ON CONFLICT(key) "
                         "DO UPDATE SET value=excluded.value"},
            {&put_answer_, "INSERT INTO answers VALUES(?1,?2) ON CONFLICT(id) "
                           "DO UPDATE SET answer=excluded.answer"},
            {&add_spend_, "INSERT INTO spend VALUES(?1,?2,?3) ON CONFLICT(budget, window) "
                          "DO UPDATE SET committed=committed+excluded.committed"},
            {&find_record_, "SELECT cost, charges, model_asked, anomaly FROM ledger WHERE id=?1"},
            {&set_cost_, "UPDATE ledger SET cost=?2, estimated=0, anomaly=?3 WHERE id=?1"},
            {&begin_, "BEGIN IMMEDIATE"},
            {&commit_, "COMMIT"},
            {&rollback_, "ROLLBACK"},
        };
        for (const auto& s : stmts)
            if (s.s->prepare(db_, s.sql) != SQLITE_OK)
                return fail(detail, std::string("cannot prepare ") + s.sql);
        return {};
    }

    error_code load(budget_store_state& out) override
    {
        out = {};
        statement s;
        if (s.prepare(db_, "SELECT budget, window, committed FROM spend") != SQLITE_OK)
            return error::budget_store_failed;
        int rc = 0;
        while ((rc = s.step()) == SQLITE_ROW)
            out.committed.push_back({s.text(0), s.int64(1), money::from_units(s.int64(2))});
        if (rc != SQLITE_DONE)
            return error::budget_store_failed;
        statement r;
        if (r.prepare(
                db_, "SELECT id, time_ms, request_id, model, generation_id, amount, charges "
                     "FROM reservations ORDER BY id") != SQLITE_OK)
            return error::budget_store_failed;
        while ((rc = r.step()) == SQLITE_ROW) {
            reservation_entry e;
            e.id = static_cast<std::uint64_t>(r.int64(0));
            e.time_ms = r.int64(1);
            e.request_id = static_cast<std::uint64_t>(r.int64(2));
            e.model = r.text(3);
            e.generation_id = r.text(4);
            if (!decode_charges(r.text(6), money::from_units(r.int64(5)), e.charges))
                return error::budget_store_failed;
            out.next_id = std::max(out.next_id, e.id + 1);
            out.open.push_back(std::move(e));
        }
        if (rc != SQLITE_DONE)
            return error::budget_store_failed;
        statement t;
        if (t.prepare(
                db_, "SELECT COALESCE(SUM(cost), 0), COALESCE(MAX(reservation_id), 0), "
                     "MAX(COALESCE((SELECT MAX(request_id) FROM ledger), 0), "
                     "COALESCE((SELECT MAX(request_id) FROM reservations), 0)) "
                     "FROM ledger") != SQLITE_OK ||
            t.step() != SQLITE_ROW)
            return error::budget_store_failed;
        out.ledger_total = money::from_units(t.int64(0));
        out.next_id = std::max(out.next_id, static_cast<std::uint64_t>(t.int64(1)) + 1);
        out.next_request_id = static_cast<std::uint64_t>(t.int64(2)) + 1;
        return {};
    }

    error_code reserve(const reservation_view& r) override
    {
        const money amount = r.charges.empty() ? money() : r.charges.front().amount;
        reserve_.bind(1, static_cast<std::int64_t>(r.id));
        reserve_.bind(2, r.time_ms);
        reserve_.bind(3, static_cast<std::int64_t>(r.request_id));
        reserve_.bind(4, r.model);
        reserve_.bind(5, amount.units());
        reserve_.bind(6, encode_charges(r.charges));
        return run(reserve_);
    }

    error_code note_generation(std::uint64_t id, const std::string& generation_id) override
    {
        note_.bind(1, static_cast<std::int64_t>(id));
        note_.bind(2, generation_id);
        return run(note_);
    }

    error_code settle(
        std::uint64_t reservation_id,
        std::span<const budget_charge_view> charges,
        attempt_record& rec) override
    {
        if (auto ec = run(begin_))
            return ec;
        error_code ec;
        if (reservation_id != 0) {
            release_.bind(1, static_cast<std::int64_t>(reservation_id));
            ec = run(release_);
        }
        if (!ec) {
            auto& s = insert_ledger_;
            s.bind(1, rec.time_ms);
            s.bind(2, static_cast<std::int64_t>(rec.request_id));
            s.bind(3, rec.generation_id);
            s.bind(4, static_cast<std::int64_t>(rec.tier));
            s.bind(5, rec.model_asked);
            s.bind(6, rec.model_served);
            s.bind(7, rec.provider);
            s.bind(8, static_cast<std::int64_t>(rec.prompt_tokens));
            s.bind(9, static_cast<std::int64_t>(rec.completion_tokens));
            s.bind(10, rec.cost.units());
            s.bind(11, std::string_view(to_string(rec.outcome)));
            s.bind(12, std::int64_t{rec.estimated ? 1 : 0});
            s.bind(13, rec.latency_us);
            s.bind(14, rec.keys);
            // A fleet's store settles its reservations in Redis and tells the ledger none: the
            // record still names the guard's reservation.
            s.bind(15, static_cast<std::int64_t>(reservation_id != 0 ? reservation_id : rec.reservation_id));
            s.bind(16, encode_charges(charges));
            s.bind(17, rec.reason);
            s.bind(18, rec.anomaly);
            ec = run(s);
            rec.record_id = static_cast<std::uint64_t>(sqlite3_last_insert_rowid(db_));
        }
        for (const auto& c : charges) {
            if (ec)
                break;
            ec = add_spend(c.budget, c.window, c.amount);
        }
        return finish(ec);
    }


    error_code release(std::uint64_t id) override
    {
        release_.bind(1, static_cast<std::int64_t>(id));
        return run(release_);
    }

    error_code correct(std::uint64_t record_id, money proven, correction& out) override
    {
        out = {};
        if (auto ec = run(begin_))
            return ec;
        find_record_.bind(1, static_cast<std::int64_t>(record_id));
        const int rc = find_record_.step();
        if (rc != SQLITE_ROW) {
            find_record_.reset();
            finish(error::not_found);
            return rc == SQLITE_DONE ? error_code(error::not_found)
                                     : error_code(error::budget_store_failed);
        }
        const auto old = money::from_units(find_record_.int64(0));
        const auto charges = find_record_.text(1);
        out.previous = old;
        out.model = find_record_.text(2);
        const std::string anomaly = find_record_.text(3);
        find_record_.reset();
        if (!decode_charges(charges, proven - old, out.moved))
            return finish(error::budget_store_failed);
        set_cost_.bind(1, static_cast<std::int64_t>(record_id));
        set_cost_.bind(2, proven.units());
        set_cost_.bind(3, proven > old ? proven_above_booked(proven, old) : anomaly);
        error_code ec = run(set_cost_);
        for (const auto& m : out.moved) {
            if (ec)
                break;
            ec = add_spend(m.budget, m.window, m.amount);
        }
        return finish(ec);
    }

    error_code read_ledger(std::int64_t since_ms, std::vector<attempt_record>& out) override
    {
        out.clear();
        statement s;
        const std::string sql =
            std::string("SELECT id, time_ms, request_id, generation_id, tier, model_asked, "
                        "model_served, provider, prompt_tokens, completion_tokens, cost, outcome, "
                        "estimated, latency_us, keys, ") +
            (has_reason_ ? "reason" : "''") + ", " + (has_anomaly_ ? "anomaly" : "''") +
            ", reservation_id FROM ledger WHERE time_ms >= ?1 ORDER BY id";
        if (s.prepare(db_, sql.c_str()) != SQLITE_OK)
            return error::budget_store_failed;
        s.bind(1, since_ms);
        int rc = 0;
        while ((rc = s.step()) == SQLITE_ROW) {
            attempt_record r;
            r.record_id = static_cast<std::uint64_t>(s.int64(0));
            r.time_ms = s.int64(1);
            r.request_id = static_cast<std::uint64_t>(s.int64(2));
            r.generation_id = s.text(3);
            r.tier = static_cast<std::uint32_t>(s.int64(4));
            r.model_asked = s.text(5);
            r.model_served = s.text(6);
            r.provider = s.text(7);
            r.prompt_tokens = static_cast<std::uint64_t>(s.int64(8));
            r.completion_tokens = static_cast<std::uint64_t>(s.int64(9));
            r.cost = money::from_units(s.int64(10));
            r.outcome = parse_outcome(s.text(11));
            r.estimated = s.int64(12) != 0;
            r.latency_us = s.int64(13);
            r.keys = s.text(14);
            r.reason = s.text(15);
            r.anomaly = s.text(16);
            r.reservation_id = static_cast<std::uint64_t>(s.int64(17));
            out.push_back(std::move(r));
        }
        return rc == SQLITE_DONE ? error_code() : error_code(error::budget_store_failed);
    }

    error_code put_note(std::string_view key, std::string_view value) override
    {
        put_note_.bind(1, key);
        put_note_.bind(2, value);
        return run(put_note_);
    }

    error_code put_answer(std::string_view id, std::string_view answer) override
    {
        put_answer_.bind(1, id);
        put_answer_.bind(2, answer);
        return run(put_answer_);
    }

    error_code read_answers(std::vector<std::pair<std::string, std::string>>& out) override
    {
        out.clear();
        if (!has_table("answers"))
            return {};
        statement s;
        if (s.prepare(db_, "SELECT id, answer FROM answers ORDER BY id") != SQLITE_OK)
            return error::budget_store_failed;
        int rc = 0;
        while ((rc = s.step()) == SQLITE_ROW)
            out.emplace_back(s.text(0), s.text(1));
        return rc == SQLITE_DONE ? error_code() : error_code(error::budget_store_failed);
    }

    error_code read_notes(std::vector<std::pair<std::string, std::string>>& out) override
    {
        out.clear();
        if (!has_notes_)
            return {};
        statement s;
        if (s.prepare(db_, "SELECT key, value FROM notes ORDER BY key") != SQLITE_OK)
            return error::budget_store_failed;
        int rc = 0;
        while ((rc = s.step()) == SQLITE_ROW)
            out.emplace_back(s.text(0), s.text(1));
        return rc == SQLITE_DONE ? error_code() : error_code(error::budget_store_failed);
    }

private:
    static attempt_outcome parse_outcome(const std::string& s)
    {
        for (auto o :
             {attempt_outcome::ok, attempt_outcome::error, attempt_outcome::cancelled,
              attempt_outcome::unknown, attempt_outcome::not_sent, attempt_outcome::denied})
            if (s == to_string(o))
                return o;
        return attempt_outcome::unknown;
    }

    error_code add_spend(std::string_view budget, std::int64_t window, money amount)
    {
        add_spend_.bind(1, budget);
        add_spend_.bind(2, window);
        add_spend_.bind(3, amount.units());
        return run(add_spend_);
    }

    // Every write goes through here; a reader prepared no write statement.
    error_code run(statement& s)
    {
        if (read_only_)
            return error::budget_store_failed;
        const int rc = s.step();
        s.reset();
        return rc == SQLITE_DONE || rc == SQLITE_ROW ? error_code()
                                                     : error_code(error::budget_store_failed);
    }

    error_code finish(error_code ec)
    {
        if (!ec)
            ec = run(commit_);
        if (ec)
            run(rollback_);
        return ec;
    }

    bool has_table(const char* name)
    {
        statement s;
        if (s.prepare(db_, "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?1") !=
            SQLITE_OK)
            return false;
        s.bind(1, std::string_view(name));
        return s.step() == SQLITE_ROW;
    }

    bool has_column(const char* table, const char* column)
    {
        statement s;
        if (s.prepare(
                db_, (std::string("SELECT 1 FROM pragma_table_info('") + table + "') WHERE name=?1")
                         .c_str()) != SQLITE_OK)
            return false;
        s.bind(1, std::string_view(column));
        return s.step() == SQLITE_ROW;
    }

    error_code exec(const char* sql)
    {
        return sqlite3_exec(db_, sql, nullptr, nullptr, nullptr) == SQLITE_OK
                   ? error_code()
                   : error_code(error::budget_store_failed);
    }

    error_code fail(std::string& detail, const std::string& what)
    {
        detail = what + ": " + (db_ != nullptr ? sqlite3_errmsg(db_) : "out of memory");
        return error::budget_store_failed;
    }

    sqlite3* db_ = nullptr;
    int lock_fd_ = -1;
    statement reserve_, note_, release_, insert_ledger_, add_spend_, find_record_, set_cost_,
        put_note_, put_answer_, begin_, commit_, rollback_;
    bool read_only_ = false; // no write statement is prepared
    bool has_reason_ = true;
    bool has_anomaly_ = true;
    bool has_notes_ = true;
};

} // namespace

boost::system::result<std::shared_ptr<budget_store>>
open_sqlite_store(const sqlite_store_params& params, diagnostics* diag)
{
    if (diag != nullptr)
        diag->clear();
    auto s = std::make_shared<sqlite_store>();
    std::string detail;
    if (const auto ec = s->open(params, detail)) {
        if (diag != nullptr)
            diag->message = std::move(detail);
        return ec;
    }
    return std::shared_ptr<budget_store>(std::move(s));
}

} // namespace frugal
