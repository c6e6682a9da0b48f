# Medians over rounds of the rows bench/compare.sh collected (jq -s: an array of
# `ferroturn bench --json` result rows, each with .server and .round added), as a
# Markdown table with the ratios ferroturn/coturn, ferroturn/turn-rs and
# ferroturn/ceiling. A blank cell: the server has no such figure.

def median:
  map(select(. != null)) | sort
  | if length == 0 then null
    elif length % 2 == 1 then .[(length - 1) / 2]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;

def rowkey: if .scenario == "hold" then "hold" else .name end;

def metric($m):
  if $m == "rate" then .rate_per_s
  elif $m == "cpu" then .server_cpu_us_per_op
  elif $m == "mbps" then (if .bytes_per_s == null then null else .bytes_per_s / 1e6 end)
  elif $m == "p50" then .latency.p50_us
  elif $m == "p99" then .latency.p99_us
  elif $m == "p999" then .latency.p999_us
  elif $m == "rss" then .rss_per_allocation_bytes
  else null end;

def fmt:
  if . == null then ""
  elif (. | fabs) >= 1000 then (. | round | tostring)
  elif (. | fabs) >= 10 then ((. * 10 | round) / 10 | tostring)
  else ((. * 100 | round) / 100 | tostring) end;

def ratio($a; $b):
  if $a == null or $b == null or $b == 0 then "" else (($a / $b * 100 | round) / 100 | tostring) end;

. as $rows
| def med($server; $key; $m):
    [$rows[] | select(.server == $server and rowkey == $key) | metric($m)] | median;
  def relay_names:
    [$rows[] | select(.scenario == "relay" and .peer != "plain") | .name] | unique;
  def latency_names:
    [$rows[] | select(.scenario == "latency") | .name] | unique;
  def ceiling_key($name):
    if $name == "binding" then "binding"
    else ($name | capture("^relay (channel|send) echo (?<size>[0-9]+)B$") // null
          | if . == null then null else "relay plain \(.size)B" end) end;
  ( [ ["Binding requests/s", "binding", "rate"],
      ["Binding: server CPU µs/request", "binding", "cpu"],
      ["Allocation cycles/s", "alloc cycle", "rate"],
      ["Allocation: server CPU µs/cycle", "alloc cycle", "cpu"] ]
    + [ relay_names[] as $n
        | ["\($n): round trips/s", $n, "rate"],
          ["\($n): payload MB/s", $n, "mbps"],
          ["\($n): server CPU µs/round trip", $n, "cpu"] ]
    + [ latency_names[] as $n
        | ["\($n): p50 µs", $n, "p50"],
          ["\($n): p99 µs", $n, "p99"],
          ["\($n): p999 µs", $n, "p999"] ]
    + [ ["Held allocation: server RSS bytes", "hold", "rss"] ]
  ) as $figures
  | "| figure | coturn | turn-rs | ferroturn | ceiling | ferroturn/coturn | ferroturn/turn-rs | ferroturn/ceiling |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
    ( $figures[] as [$title, $key, $m]
      | med("coturn"; $key; $m) as $c
      | med("turn-rs"; $key; $m) as $t
      | med("ferroturn"; $key; $m) as $f
      | (ceiling_key($key)) as $ck
      | (if $ck == null then null else med("ceiling"; $ck; $m) end) as $x
      | select($c != null or $t != null or $f != null)
      | "| \($title) | \($c | fmt) | \($t | fmt) | \($f | fmt) | \($x | fmt) | \(ratio($f; $c)) | \(ratio($f; $t)) | \(ratio($f; $x)) |" ),
    "",
    ( ["coturn", "turn-rs", "ferroturn", "ceiling"][] as $s
      | [$rows[] | select(.server == $s and (.scenario == "relay" or .scenario == "latency"))] as $r
      | select($r | length > 0)
      | "relay/latency packets lost on \($s): \([$r[].lost] | add) of \([$r[].sent] | add) sent (\(([$r[].lost] | add) / ([$r[].sent] | add) * 100 | fmt) %); rounds: \([$rows[] | select(.server == $s) | .round] | unique | length)" )
