# Medians over rounds of the rows bench/compare.sh collected (jq -s: an array of
# `ferroturn bench --json` result rows, each with .server, .round and .shape added,
# and rows {server, round, shape, unsupported or failed: why} for runs a server
# could not do or that failed), as
# Markdown tables: first one per traffic shape (100-byte ChannelData), then the
# other figures. Arguments from compare.sh: $labels (server → column title, in
# column order), $order (the servers run, space-separated), $subjects (servers
# whose ratios are printed) and $references (what they are compared with). A
# blank cell: the server has no such figure.

def median:
  map(select(. != null)) | sort
  | if length == 0 then null
    elif length % 2 == 1 then .[(length - 1) / 2]
    else (.[length / 2 - 1] + .[length / 2]) / 2 end;

def metric($m):
  if $m == "rate" then .rate_per_s
  elif $m == "cpu" then .server_cpu_us_per_op
  elif $m == "machine" then .machine_cpu_us_per_op
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

# Why a row is not a measurement: "unsupported: WHY", "failed: WHY", or null.
def not_run:
  if .unsupported != null then "unsupported: \(.unsupported)"
  elif .failed != null then "failed: \(.failed)"
  else null end;

def shape_title:
  if . == "1x64" then "1 flow × 64 in flight"
  elif . == "8x16" then "8 flows × 16 in flight"
  elif . == "c2c" then "client to client, 8 flows × 16 in flight"
  else . end;

# The row that is a shape's figure: 100-byte ChannelData (the ceiling: plain).
def shape_row: .shape != "" and .scenario == "relay" and .mode == "channel" and .payload_bytes == 100;

# The key of a figure outside the shape tables.
def rowkey:
  if .scenario == "hold" then "hold"
  elif .scenario == "relay" then "\(.name) (\(.shape))"
  else .name end;

. as $rows
| ($order | split(" ") | map(select(. != ""))) as $run
| [$labels | keys_unsorted[] | select(. as $s | $run | index($s))] as $cols
| [$subjects[] | select(. as $s | $cols | index($s))] as $subj
| [$references[] | select(. as $s | $cols | index($s))] as $refs
| [$subj[] as $s | $refs[] as $r | select($s != $r) | [$s, $r]] as $pairs
| def med($server; sel; $m):
    [$rows[] | select(.server == $server and not_run == null) | select(sel) | metric($m)] | median;
  # The reasons ("unsupported: …", "failed: …") why $server has no $shape rows.
  def why($server; $shape):
    [$rows[] | select(.server == $server and .shape == $shape and not_run != null) | not_run]
    | unique;
  def row($cells): "| \($cells | join(" | ")) |";
  def header:
    row(["figure"] + [$cols[] | $labels[.]] + [$pairs[] | "\($labels[.[0]]) / \($labels[.[1]])"]),
    row(["---"] + [$cols[], $pairs[] | "---:"]);
  def line($title; $vals):
    row([$title] + [$cols[] as $c | $vals[$c]]
        + [$pairs[] as [$s, $r] | ratio($vals["_" + $s]; $vals["_" + $r])]);
  ( [$rows[] | .shape | select(. == "1x64" or . == "8x16" or . == "c2c")] | unique
    | sort_by(if . == "1x64" then 0 elif . == "8x16" then 1 else 2 end) ) as $shapes
  | ( $shapes[] as $shape
      | "### \($shape | shape_title), 100-byte ChannelData",
        "",
        header,
        ( [ ["round trips/s", "rate"],
            ["server CPU µs/round trip", "cpu"],
            ["whole-machine CPU µs/round trip", "machine"] ][] as [$title, $m]
          | (reduce $cols[] as $c ({};
              med($c; .shape == $shape and shape_row; $m) as $v
              | .["_" + $c] = $v
              | .[$c] = (if $v != null then ($v | fmt)
                         elif (why($c; $shape) | length) > 0
                         then (why($c; $shape)[0] | split(":")[0])
                         else "" end))) as $vals
          | line($title; $vals) ),
        "",
        ( $cols[] as $c | why($c; $shape)[] as $w
          | select(med($c; .shape == $shape and shape_row; "rate") == null)
          | "- \($labels[$c]): \($w)" ),
        "" ),
    ( [ ["Binding requests/s", "binding", "rate"],
        ["Binding: server CPU µs/request", "binding", "cpu"],
        ["Binding: whole-machine CPU µs/request", "binding", "machine"],
        ["Allocation cycles/s", "alloc cycle", "rate"],
        ["Allocation: server CPU µs/cycle", "alloc cycle", "cpu"],
        ["Allocation: whole-machine CPU µs/cycle", "alloc cycle", "machine"] ]
      + [ [$rows[] | select(.scenario == "relay" and .peer != "plain"
                            and (shape_row | not)) | rowkey] | unique | .[] as $k
          | ["\($k): round trips/s", $k, "rate"],
            ["\($k): payload MB/s", $k, "mbps"],
            ["\($k): server CPU µs/round trip", $k, "cpu"],
            ["\($k): whole-machine CPU µs/round trip", $k, "machine"] ]
      + [ [$rows[] | select(.scenario == "latency") | .name] | unique | .[] as $n
          | ["\($n): p50 µs", $n, "p50"],
            ["\($n): p99 µs", $n, "p99"],
            ["\($n): p999 µs", $n, "p999"] ]
      + [ ["Held allocation: server RSS bytes", "hold", "rss"] ]
    ) as $figures
    | def has_value($key; $m): [$cols[] | select(. != "ceiling") as $c | med($c; rowkey == $key; $m)] | any(. != null);
      [$figures[] | select(has_value(.[1]; .[2]))] as $figures
    | (if ($figures | length) > 0 then "### Other figures", "", header else empty end),
      ( $figures[] as [$title, $key, $m]
        # The ceiling's counterpart of a relay figure: the plain forwarder at the
        # same shape and payload size.
        | ($key | capture("^relay (channel|send) echo (?<size>[0-9]+)B \\((?<shape>[^)]*)\\)$") // null
           | if . == null then null else "relay plain \(.size)B (\(.shape))" end) as $ck
        | (reduce $cols[] as $c ({};
            (if $c == "ceiling" and $ck != null then $ck else $key end) as $k
            | med($c; rowkey == $k; $m) as $v
            | .["_" + $c] = $v | .[$c] = ($v | fmt))) as $vals
        | line($title; $vals) ),
      "",
      ( $rows | map(select(not_run != null and (.shape | test("^\\(")))) | unique_by([.server, .shape])[]
        | "- \($labels[.server]) \(.shape): \(not_run)" ),
      ( $cols[] as $s
        | [$rows[] | select(.server == $s and (.scenario == "relay" or .scenario == "latency"))] as $r
        | select($r | length > 0)
        | "relay/latency packets lost on \($labels[$s]): \([$r[].lost] | add) of \([$r[].sent] | add) sent (\(([$r[].lost] | add) / ([$r[].sent] | add) * 100 | fmt) %); rounds: \([$rows[] | select(.server == $s) | .round] | unique | length)" )
