/**
 * The 2D character. Expression (brows, eyes, mouth shape, blush) follows the emotion through CSS
 * transitions; the mouth opening follows the reply audio level, read from an AnalyserNode every
 * animation frame and written straight to a CSS variable so React does not re-render at 60 Hz.
 */
import { useEffect, useRef } from 'react';
import type { Emotion } from '../protocol/messages';

interface Props {
  emotion: Emotion;
  analyser: AnalyserNode | null;
  speaking: boolean;
  label: string;
}

export function Avatar({ emotion, analyser, speaking, label }: Props) {
  const ref = useRef<SVGSVGElement>(null);

  useEffect(() => {
    const el = ref.current;
    if (!el || !analyser) return;
    const buf = new Float32Array(analyser.fftSize);
    let level = 0;
    let raf = 0;
    const tick = () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      const rms = Math.sqrt(sum / buf.length);
      // fast attack, slower release: the mouth snaps open on syllables and closes smoothly
      const target = Math.min(1, rms * 6);
      level = target > level ? target : level * 0.8 + target * 0.2;
      el.style.setProperty('--mouth-open', level.toFixed(3));
      el.dataset.mouth = level > 0.05 ? 'open' : 'closed';
      raf = requestAnimationFrame(tick);
    };
    raf = requestAnimationFrame(tick);
    return () => cancelAnimationFrame(raf);
  }, [analyser]);

  return (
    <svg
      ref={ref}
      className={`avatar emotion-${emotion}${speaking ? ' is-speaking' : ''}`}
      viewBox="0 0 200 220"
      role="img"
      aria-label={label}
      data-testid="avatar"
      data-emotion={emotion}
    >
      <defs>
        <radialGradient id="skin" cx="50%" cy="40%" r="60%">
          <stop offset="0%" stopColor="#ffe3cf" />
          <stop offset="100%" stopColor="#f5c4a5" />
        </radialGradient>
      </defs>
      <g className="avatar-body">
        <path className="hair-back" d="M30 110 Q28 30 100 26 Q172 30 170 110 L170 170 Q100 190 30 170 Z" />
        <ellipse className="face" cx="100" cy="110" rx="62" ry="70" fill="url(#skin)" />
        <path className="hair-front" d="M38 96 Q50 40 100 38 Q150 40 162 96 Q140 70 120 66 Q104 84 70 80 Q52 84 38 96 Z" />
        <g className="blush">
          <ellipse cx="62" cy="132" rx="11" ry="6" />
          <ellipse cx="138" cy="132" rx="11" ry="6" />
        </g>
        <g className="brows">
          <path className="brow brow-left" d="M58 86 Q72 79 86 85" />
          <path className="brow brow-right" d="M114 85 Q128 79 142 86" />
        </g>
        <g className="eyes">
          <g className="eye eye-left">
            <ellipse className="eye-white" cx="72" cy="108" rx="12" ry="13" />
            <circle className="pupil" cx="73" cy="109" r="7" />
            <circle className="glint" cx="76" cy="105" r="2.2" />
          </g>
          <g className="eye eye-right">
            <ellipse className="eye-white" cx="128" cy="108" rx="12" ry="13" />
            <circle className="pupil" cx="127" cy="109" r="7" />
            <circle className="glint" cx="130" cy="105" r="2.2" />
          </g>
        </g>
        <g className="mouth">
          <path className="mouth-line" />
          <ellipse className="mouth-open" cx="100" cy="152" rx="13" ry="10" />
        </g>
      </g>
    </svg>
  );
}
