# Prints a TextGrid's tiers and intervals as Praat reads them: "tiers N", then per interval "start TAB end TAB label".
form Intervals
    sentence path
endform
Read from file: path$
tiers = Get number of tiers
writeInfoLine: "tiers ", tiers
for tier to tiers
    intervals = Get number of intervals: tier
    for i to intervals
        start = Get starting point: tier, i
        end = Get end point: tier, i
        label$ = Get label of interval: tier, i
        appendInfoLine: fixed$(start, 15), tab$, fixed$(end, 15), tab$, label$
    endfor
endfor
