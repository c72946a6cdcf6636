-- Visits on days their city was open: every visit without a closure on the same date
-- in the same city.
SELECT v.date, v.city, v.visitors
FROM visits v
LEFT ANTI JOIN closures c ON v.date = c.date AND v.city = c.city
