// The "copy" buttons next to code: copy the <pre> beside them.
document.addEventListener("click", (e) => {
  const b = e.target.closest("button.copy");
  if (!b) return;
  const text = b.parentElement.querySelector("pre").innerText;
  navigator.clipboard.writeText(text).then(() => { b.textContent = "copied"; },
                                            () => { b.textContent = "select and copy"; });
});
